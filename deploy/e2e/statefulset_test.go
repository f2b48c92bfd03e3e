package e2e

// TestStatefulSetPodsInDocker runs the pod template of deploy/k8s's StatefulSet in Docker
// the way a kubelet runs it: everything comes from the decoded manifests (args after
// $(VAR) expansion, env from the downward API and a Secret, the volume mount, the security
// context, the resource limits, the grace period, the probes), and DNS answers the names a
// headless Service gives. The operator commands are the ones docs/operations.md prints for
// Kubernetes, run through docker exec as kubectl exec would. What it cannot show (the
// scheduler, NetworkPolicy, the PDB, the API server) is listed in docs/operations.md
// section 4.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/txcoord/txcoord/deploy/k8s"
)

// The namespace the docs' commands use (kubectl -n txcoord).
const stsNamespace = "txcoord"

// Bounds on the waits (a kubelet's readiness probe runs every periodSeconds, so each one
// includes a few probe periods).
const (
	formationBound = 90 * time.Second
	restartBound   = 60 * time.Second
	membersBound   = 90 * time.Second
)

type stsPod struct {
	name      string    // txcoord-N: the pod's name, hostname and node id
	container string    // the Docker container (unique per run)
	volume    string    // the Docker volume standing for its PVC data-txcoord-N
	removed   bool      // taken out of the Raft configuration (peers remove)
	removedAt time.Time // when
	hostPort  int       // the http port published on 127.0.0.1
	probes    *kubeletProbes
}

type stsEnv struct {
	*env
	m        *k8s.Manifests
	sts      *appsv1.StatefulSet
	c        corev1.Container
	image    string
	network  string
	service  string   // the headless Service's DNS name: txcoord-peers.txcoord.svc
	services []string // the participant's prepare URL, as the pods see it
	secrets  map[string]map[string]string
	apiToken string
	pods     map[string]*stsPod
	order    []string // pod names in creation order (cleanup)
	extra    []string // other containers (the participant)
	volumes  []string
}

func TestStatefulSetPodsInDocker(t *testing.T) {
	if os.Getenv("TXCOORD_DOCKER") != "1" {
		t.Skip("set TXCOORD_DOCKER=1 (make e2e-docker builds the image and does) to run the StatefulSet's pods in Docker")
	}
	s := newStsEnv(t)
	fig := &figures{}
	t.Cleanup(func() { s.report(fig) })

	// The participant, on the pods' network as a participant in the cluster would be.
	part := s.network + "-flight"
	s.extra = append(s.extra, part)
	s.volumes = append(s.volumes, part)
	s.docker("run", "-d", "--name", part, "--network", s.network, "--network-alias", "flight", "--read-only",
		"-v", part+":/data", s.image, "participant", "--kind", "flight", "--listen", "0.0.0.0:9000", "--data-dir", "/data", "--capacity", "1000000")
	services := s.services

	// Formation: spec.replicas pods, started as the podManagementPolicy says.
	replicas := int(*s.sts.Spec.Replicas)
	tUp := time.Now()
	s.scaleTo(replicas)
	fig.add(fmt.Sprintf("formation: %d pods Ready (kubelet probes)", replicas), time.Since(tUp), "")
	st := s.cluster("txcoord-0")
	if v := voters(st); v != replicas || st.LeaderID == "" {
		t.Fatalf("after formation: %d voters, leader %q; want %d voters and a leader: %+v", v, st.LeaderID, replicas, st.Members)
	}

	// Clients: a token from the Secret, through a follower (it forwards to the leader with
	// the cluster token, to the leader's advertised stable name).
	follower := ""
	for _, p := range s.running() {
		if p.name != st.LeaderID {
			follower = p.name
			break
		}
	}
	tx1 := s.submit(follower, s.apiToken, services, http.StatusOK)
	if tx1.Status != "committed" {
		t.Fatalf("transaction through %s: status %q, want committed", follower, tx1.Status)
	}
	s.logf("transaction %s through %s: %s", tx1.ID, follower, tx1.Status)
	s.submit(follower, "", services, http.StatusUnauthorized)
	s.submit(follower, "not-"+s.apiToken, services, http.StatusUnauthorized)

	// Restart the leader with its volume: SIGTERM, at most the grace period, then start.
	leader := s.pods[st.LeaderID]
	before := s.cluster(follower)
	tStop := time.Now()
	s.stopPod(leader)
	stopped := time.Since(tStop)
	fig.add("restart: docker stop (SIGTERM) of the leader "+leader.name, stopped, "")
	if grace := time.Duration(*s.sts.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second; stopped >= grace {
		t.Errorf("%s took %s to stop: killed at the end of the grace period %s", leader.name, stopped, grace)
	}
	if code := strings.TrimSpace(s.inspect(leader.container, "{{.State.ExitCode}}")); code != "0" {
		t.Errorf("%s exited %s on SIGTERM, want 0", leader.name, code)
	}
	tStart := time.Now()
	s.startPod(leader)
	s.waitReady([]*stsPod{leader}, restartBound)
	fig.add("restart: "+leader.name+" Ready again", time.Since(tStart), "")
	after := s.cluster(leader.name)
	if others := s.cluster(follower); !sameMembers(before, after) || after.LeaderID == "" || after.LeaderID != others.LeaderID || after.Term < before.Term {
		t.Errorf("after the restart %s sees members %v, leader %q, term %d; before: %v, term %d (a new cluster?)",
			leader.name, memberIDs(after), after.LeaderID, after.Term, memberIDs(before), before.Term)
	}
	var again finalTxn
	if err := getJSONAuth(s.podURL(leader)+"/v1/transactions/"+tx1.ID, s.apiToken, &again); err != nil || again.Status != "committed" {
		t.Errorf("after the restart %s reads %s as %+v (%v), want committed", leader.name, tx1.ID, again, err)
	}

	// Scale up and down with the commands of docs/operations.md sections 5 and 6.
	tScale := time.Now()
	s.runDocSteps("Kubernetes, step by step (3 -> 5)")
	fig.add("scale up: docs' steps (3 -> 5) until cluster status lists 5 voters", time.Since(tScale), "")
	// The steps of section 6 are run back to back, with the leader on the pod removed first:
	// the worst case for them (it steps down, and the next command comes at once).
	top := fmt.Sprintf("%s-%d", s.sts.Name, len(s.running())-1)
	if out, code := s.dockerOut("exec", s.pods["txcoord-0"].container, "/usr/local/bin/txcoord", "cluster", "transfer-leadership",
		"--to", top, "--node", "http://127.0.0.1:8080"); code != 0 {
		t.Fatalf("transfer-leadership --to %s: exit %d: %s", top, code, out)
	}
	if st := s.cluster("txcoord-0"); st.LeaderID != top {
		t.Fatalf("after transfer-leadership --to %s the leader is %q", top, st.LeaderID)
	}
	s.logf("leader: %s", top)
	tScale = time.Now()
	s.runDocSteps("Kubernetes, step by step (5 -> 3")
	fig.add("scale down: docs' steps (5 -> 3)", time.Since(tScale), "")
	if n := len(s.running()); n != replicas {
		t.Fatalf("after scaling down %d pods run, want %d", n, replicas)
	}
	st = s.cluster("txcoord-0")
	if v := voters(st); v != replicas {
		t.Errorf("after scaling down: %d voters %v, want %d", v, memberIDs(st), replicas)
	}
	for _, p := range s.running() {
		tx := s.submit(p.name, s.apiToken, services, http.StatusOK)
		if tx.Status != "committed" {
			t.Errorf("after scaling down, a transaction through %s: %q, want committed", p.name, tx.Status)
		}
	}
	for _, p := range s.running() {
		if p.probes.livenessFailed.Load() {
			t.Errorf("%s: the liveness probe failed past its failureThreshold: the kubelet would have restarted it", p.name)
		}
	}
}

// ---- the pods as a kubelet runs them -----------------------------------------------------

func newStsEnv(t *testing.T) *stsEnv {
	m, err := k8s.Load("../k8s")
	if err != nil {
		t.Fatal(err)
	}
	var suffix [3]byte
	_, _ = rand.Read(suffix[:])
	s := &stsEnv{
		env:      &env{t: t, project: fmt.Sprintf("txsts%d%x", os.Getpid(), suffix), envv: os.Environ(), ports: map[string]int{}, start: time.Now()},
		m:        m,
		sts:      m.StatefulSet,
		pods:     map[string]*stsPod{},
		services: []string{"http://flight:9000/prepare"},
	}
	s.network = s.project
	tmpl := s.sts.Spec.Template.Spec
	if len(tmpl.Containers) != 1 || len(tmpl.InitContainers) > 0 || len(tmpl.Volumes) > 0 {
		t.Fatalf("the pod template has %d containers, %d init containers, %d volumes: this test runs one container with claim volumes only",
			len(tmpl.Containers), len(tmpl.InitContainers), len(tmpl.Volumes))
	}
	if tmpl.EnableServiceLinks == nil || *tmpl.EnableServiceLinks {
		// The kubelet would add TXCOORD_PORT=tcp://... and the like for every Service.
		t.Fatal("enableServiceLinks must be false: this test does not make the Service variables a kubelet would set")
	}
	s.c = tmpl.Containers[0]
	s.image = m.ImageFor(s.c.Image)
	if img := os.Getenv("TXCOORD_IMAGE"); img != "" && img != s.image {
		s.logf("image %s instead of the kustomization's %s (TXCOORD_IMAGE, as `kustomize edit set image` would)", img, s.image)
		s.image = img
	}
	if _, code := s.dockerOut("image", "inspect", s.image); code != 0 {
		t.Fatalf("image %s not found (imagePullPolicy %s, and no registry here): run `make image`", s.image, s.c.ImagePullPolicy)
	}
	s.service = s.sts.Spec.ServiceName + "." + stsNamespace + ".svc"
	if svc := m.Services[s.sts.Spec.ServiceName]; svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Fatalf("Service %s must be headless and publish not-ready pods: the network alias %s stands for that", s.sts.Spec.ServiceName, s.service)
	}
	s.secrets = docSecret(t)
	for name, sec := range s.secrets {
		s.logf("Secret %s: keys %v (docs/operations.md section 4), random values", name, keysOf(sec))
	}
	for _, e := range s.c.Env {
		if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && r.SecretKeyRef.Key == "api-tokens" {
			s.apiToken = strings.Split(s.secrets[r.SecretKeyRef.Name]["api-tokens"], ",")[0]
		}
	}
	if s.apiToken == "" {
		t.Fatal("no env from the Secret's api-tokens key: clients would need no token")
	}
	t.Cleanup(s.cleanup)
	s.docker("network", "create", "--label", "txcoord-e2e="+s.project, s.network)
	return s
}

// docSecret is the Secret of docs/operations.md section 4's `kubectl create secret
// generic` command: its name and --from-literal keys, each with a fresh random value
// (32 random bytes in hex, what the command's pipeline prints).
func docSecret(t *testing.T) map[string]map[string]string {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	cmd := regexp.MustCompile(`kubectl -n (\S+) create secret generic (\S+) \\\n((?:.*\\\n)*.*)`).FindSubmatch(doc)
	if cmd == nil || string(cmd[1]) != stsNamespace {
		t.Fatalf("docs/operations.md: no `kubectl -n %s create secret generic` command", stsNamespace)
	}
	sec := map[string]string{}
	for _, k := range regexp.MustCompile(`--from-literal=([A-Za-z0-9._-]+)=`).FindAllSubmatch(cmd[3], -1) {
		var b [32]byte
		_, _ = rand.Read(b[:])
		sec[string(k[1])] = hex.EncodeToString(b[:])
	}
	if len(sec) == 0 {
		t.Fatalf("docs/operations.md: the create secret command has no --from-literal keys:\n%s", cmd[0])
	}
	return map[string]map[string]string{string(cmd[2]): sec}
}

func keysOf(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// runArgs is `docker run` for pod p from the template, as a kubelet would create it.
func (s *stsEnv) runArgs(p *stsPod) ([]string, error) {
	spec := s.sts.Spec.Template.Spec
	c := s.c
	env, err := k8s.ContainerEnv(c, k8s.Pod{Name: p.name, Namespace: stsNamespace}, s.secrets)
	if err != nil {
		return nil, err
	}
	a := []string{"run", "-d", "--name", p.container, "--hostname", p.name, "--network", s.network,
		// The pod's stable name, and the headless Service's name: Docker's DNS answers every
		// running pod's address for a shared alias, as publishNotReadyAddresses does.
		"--network-alias", p.name + "." + s.service, "--network-alias", s.service,
		"--label", "txcoord-e2e=" + s.project}
	for k, v := range s.sts.Spec.Template.Labels {
		a = append(a, "--label", k+"="+v)
	}
	for _, e := range env {
		a = append(a, "-e", e.Name+"="+e.Value)
	}

	// Security context: the container's fields override the pod's.
	psc, csc := spec.SecurityContext, c.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	uid, gid, nonRoot := psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
	if csc.RunAsUser != nil {
		uid = csc.RunAsUser
	}
	if csc.RunAsGroup != nil {
		gid = csc.RunAsGroup
	}
	if csc.RunAsNonRoot != nil {
		nonRoot = csc.RunAsNonRoot
	}
	if uid == nil {
		return nil, fmt.Errorf("no runAsUser: the kubelet would check the image's USER, this test does not")
	}
	if nonRoot != nil && *nonRoot && *uid == 0 {
		return nil, fmt.Errorf("runAsNonRoot with runAsUser 0: the kubelet refuses to start the container")
	}
	user := strconv.FormatInt(*uid, 10)
	if gid != nil {
		user += ":" + strconv.FormatInt(*gid, 10)
	}
	a = append(a, "--user", user)
	if psc.FSGroup != nil {
		a = append(a, "--group-add", strconv.FormatInt(*psc.FSGroup, 10))
	}
	if csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem {
		a = append(a, "--read-only")
	}
	if csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation {
		a = append(a, "--security-opt", "no-new-privileges")
	}
	if csc.Privileged != nil && *csc.Privileged {
		a = append(a, "--privileged")
	}
	if caps := csc.Capabilities; caps != nil {
		for _, c := range caps.Drop {
			a = append(a, "--cap-drop", string(c))
		}
		for _, c := range caps.Add {
			a = append(a, "--cap-add", string(c))
		}
	}
	for _, sp := range []*corev1.SeccompProfile{psc.SeccompProfile, csc.SeccompProfile} {
		switch {
		case sp == nil || sp.Type == corev1.SeccompProfileTypeRuntimeDefault:
			// Docker's default profile is the runtime default.
		case sp.Type == corev1.SeccompProfileTypeUnconfined:
			a = append(a, "--security-opt", "seccomp=unconfined")
		default:
			return nil, fmt.Errorf("seccompProfile %s is not supported here", sp.Type)
		}
	}

	// Resources, as the kubelet sets the cgroup: limits are the quota and the memory limit,
	// the CPU request the shares (1024 per CPU, at least 2).
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		a = append(a, "--cpus", strconv.FormatFloat(float64(q.MilliValue())/1000, 'f', -1, 64))
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		a = append(a, "--memory", strconv.FormatInt(q.Value(), 10))
	}
	if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
		a = append(a, "--cpu-shares", strconv.FormatInt(max(2, q.MilliValue()*1024/1000), 10))
	}
	if g := spec.TerminationGracePeriodSeconds; g != nil {
		a = append(a, "--stop-timeout", strconv.FormatInt(*g, 10))
	}

	// Volumes: each mount is a claim of the volumeClaimTemplates, one volume per pod.
	claims := map[string]bool{}
	for _, vc := range s.sts.Spec.VolumeClaimTemplates {
		claims[vc.Name] = true
	}
	for _, vm := range c.VolumeMounts {
		if !claims[vm.Name] || vm.SubPath != "" {
			return nil, fmt.Errorf("volumeMount %s: only whole volumeClaimTemplates are supported here", vm.Name)
		}
		mount := p.volume + ":" + vm.MountPath
		if vm.ReadOnly {
			mount += ":ro"
		}
		a = append(a, "-v", mount)
	}

	// The probes' port, published so that this test can act as the kubelet.
	port, err := s.probePort()
	if err != nil {
		return nil, err
	}
	a = append(a, "-p", "127.0.0.1::"+strconv.Itoa(int(port)))

	// command replaces the image's ENTRYPOINT, args its CMD; both are $(VAR)-expanded.
	cmd := k8s.ExpandAll(c.Command, env)
	if len(cmd) > 0 {
		a = append(a, "--entrypoint", cmd[0])
	}
	a = append(a, s.image)
	if len(cmd) > 1 {
		a = append(a, cmd[1:]...)
	}
	return append(a, k8s.ExpandAll(c.Args, env)...), nil
}

// probePort is the container port both probes use (a name resolves to the container's
// port of that name).
func (s *stsEnv) probePort() (int32, error) {
	var port int32
	for _, pr := range []*corev1.Probe{s.c.ReadinessProbe, s.c.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			return 0, fmt.Errorf("want httpGet readiness and liveness probes")
		}
		p := pr.HTTPGet.Port
		n := p.IntVal
		if p.Type == intstr.String {
			n = 0
			for _, cp := range s.c.Ports {
				if cp.Name == p.StrVal {
					n = cp.ContainerPort
				}
			}
		}
		if n == 0 || (port != 0 && n != port) {
			return 0, fmt.Errorf("probe port %s: want one container port for both probes", p.String())
		}
		port = n
	}
	return port, nil
}

func (s *stsEnv) newPod(name string) *stsPod {
	p := s.pods[name]
	if p == nil {
		p = &stsPod{name: name}
		s.pods[name] = p
		s.order = append(s.order, name)
	}
	// A StatefulSet names the claim <template>-<pod>.
	p.volume = s.project + "-" + s.sts.Spec.VolumeClaimTemplates[0].Name + "-" + name
	p.container = s.project + "-" + name
	p.removed = false
	s.volumes = append(s.volumes, p.volume)
	return p
}

// scaleTo creates or deletes pods until txcoord-0..n-1 run: new pods are started together
// (Parallel) or one at a time, each Ready before the next (OrderedReady); deleted ones go
// from the highest ordinal down, with their volumes when whenScaled is Delete.
func (s *stsEnv) scaleTo(n int) {
	s.t.Helper()
	running := s.running()
	for i := len(running) - 1; i >= n; i-- {
		p := running[i]
		s.stopPod(p)
		s.docker("rm", p.container)
		p.container = ""
		if r := s.sts.Spec.PersistentVolumeClaimRetentionPolicy; r != nil && r.WhenScaled == appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
			s.docker("volume", "rm", p.volume)
		}
	}
	var added []*stsPod
	for i := len(running); i < n; i++ {
		added = append(added, s.newPod(fmt.Sprintf("%s-%d", s.sts.Name, i)))
	}
	if s.sts.Spec.PodManagementPolicy == appsv1.ParallelPodManagement {
		var wg sync.WaitGroup
		errs := make([]error, len(added))
		for i, p := range added {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = s.createPod(p) }()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				s.t.Fatal(err)
			}
		}
		s.waitReady(added, formationBound)
		return
	}
	for _, p := range added {
		if err := s.createPod(p); err != nil {
			s.t.Fatal(err)
		}
		s.waitReady([]*stsPod{p}, formationBound)
	}
}

// createPod runs p's container and starts probing it. Safe from several goroutines.
func (s *stsEnv) createPod(p *stsPod) error {
	args, err := s.runArgs(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	s.logf("%s: docker %s", p.name, s.redact(strings.Join(args, " ")))
	if out, code := s.dockerOut(args...); code != 0 {
		return fmt.Errorf("docker run %s: exit %d: %s", p.name, code, out)
	}
	return s.probe(p)
}

// redact hides the Secret's values in a logged command line.
func (s *stsEnv) redact(line string) string {
	for _, sec := range s.secrets {
		for k, v := range sec {
			line = strings.ReplaceAll(line, v, "<secret "+k+">")
		}
	}
	return line
}

func (s *stsEnv) startPod(p *stsPod) {
	s.t.Helper()
	s.docker("start", p.container)
	if err := s.probe(p); err != nil {
		s.t.Fatal(err)
	}
}

// stopPod stops probing p, then stops it as a kubelet does: SIGTERM, SIGKILL after
// terminationGracePeriodSeconds.
func (s *stsEnv) stopPod(p *stsPod) {
	s.t.Helper()
	p.probes.stop()
	if p.probes.livenessFailed.Load() {
		s.t.Errorf("%s: the liveness probe failed past its failureThreshold: the kubelet would have restarted it", p.name)
	}
	grace := strconv.FormatInt(*s.sts.Spec.Template.Spec.TerminationGracePeriodSeconds, 10)
	s.docker("stop", "-t", grace, p.container)
}

// probe finds p's published port (a new one after each start) and runs its probes.
func (s *stsEnv) probe(p *stsPod) error {
	port, _ := s.probePort()
	out, code := s.dockerOut("port", p.container, fmt.Sprintf("%d/tcp", port))
	line := strings.TrimSpace(strings.Split(out, "\n")[0])
	hp, err := strconv.Atoi(line[strings.LastIndex(line, ":")+1:])
	if code != 0 || err != nil {
		return fmt.Errorf("docker port %s: %q", p.container, out)
	}
	p.hostPort = hp
	p.probes = startProbes(s.env, p.name, hp, s.c.ReadinessProbe, s.c.LivenessProbe)
	return nil
}

func (s *stsEnv) running() []*stsPod {
	var out []*stsPod
	for i := 0; ; i++ {
		p := s.pods[fmt.Sprintf("%s-%d", s.sts.Name, i)]
		if p == nil || p.container == "" {
			return out
		}
		out = append(out, p)
	}
}

func (s *stsEnv) waitReady(pods []*stsPod, bound time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(bound)
	for {
		var notReady []string
		for _, p := range pods {
			if p.probes.livenessFailed.Load() {
				s.t.Fatalf("%s: liveness probe failed %d times: the kubelet would restart it", p.name, s.c.LivenessProbe.FailureThreshold)
			}
			if !p.probes.ready.Load() {
				notReady = append(notReady, p.name)
			}
		}
		if len(notReady) == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("not Ready within %s: %v", bound, notReady)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *stsEnv) inspect(container, format string) string {
	out, _ := s.dockerOut("inspect", "-f", format, container)
	return out
}

func (s *stsEnv) podURL(p *stsPod) string { return fmt.Sprintf("http://127.0.0.1:%d", p.hostPort) }

// cluster is /v1/cluster as pod name sees it, with the API token.
func (s *stsEnv) cluster(name string) clusterView {
	s.t.Helper()
	var st clusterView
	if err := getJSONAuth(s.podURL(s.pods[name])+"/v1/cluster", s.apiToken, &st); err != nil {
		s.t.Fatalf("GET /v1/cluster on %s: %v", name, err)
	}
	return st
}

type clusterView struct {
	clusterStatus
	Members []struct {
		ID       string `json:"id"`
		Suffrage string `json:"suffrage"`
	} `json:"members"`
}

func voters(st clusterView) int {
	n := 0
	for _, m := range st.Members {
		if m.Suffrage == "voter" {
			n++
		}
	}
	return n
}

func memberIDs(st clusterView) []string {
	var ids []string
	for _, m := range st.Members {
		ids = append(ids, m.ID+"("+m.Suffrage+")")
	}
	return ids
}

func sameMembers(a, b clusterView) bool {
	return strings.Join(memberIDs(a), " ") == strings.Join(memberIDs(b), " ")
}

type submitted struct {
	ID     string `json:"transactionId"`
	Status string `json:"status"`
	Error  string `json:"error"`
}

// submit POSTs a transaction to pod name with token ("": none) and wants HTTP code want.
func (s *stsEnv) submit(name, token string, services []string, want int) submitted {
	s.t.Helper()
	code, out, raw, err := s.post(s.pods[name], token, services)
	if err != nil {
		s.t.Fatalf("POST /v1/transactions on %s: %v", name, err)
	}
	if code != want {
		s.t.Fatalf("POST /v1/transactions on %s (token %v): HTTP %d %s, want %d", name, token != "", code, raw, want)
	}
	return out
}

func (s *stsEnv) post(p *stsPod, token string, services []string) (int, submitted, []byte, error) {
	body, _ := json.Marshal(map[string]any{"services": services, "timeout": 5000})
	req, _ := http.NewRequest(http.MethodPost, s.podURL(p)+"/v1/transactions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	var out submitted
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return 0, out, nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, raw, nil
}

// checkRemoved checks what docs/operations.md section 6 says of a pod taken out of the
// configuration that still runs: a request answers 503 unavailable, and its readiness
// fails (so a client Service stops sending to it); its liveness does not.
func (s *stsEnv) checkRemoved(p *stsPod, services []string) {
	s.t.Helper()
	start := p.removedAt
	deadline := time.Now().Add(10 * time.Second)
	before := map[string]int{} // the answers before the first 503
	for {
		code, out, raw, err := s.post(p, s.apiToken, services)
		if err == nil && code == http.StatusServiceUnavailable && out.Error == "unavailable" {
			s.logf("  -> %s answers 503 unavailable %s after its removal (before that: %v): %s", p.name, time.Since(start).Round(time.Millisecond), before, bytes.TrimSpace(raw))
			break
		}
		before[fmt.Sprintf("%d %s%s", code, out.Status, out.Error)]++
		if time.Now().After(deadline) {
			s.t.Fatalf("%s, removed, answers HTTP %d %s (%v); docs/operations.md section 6 says 503 unavailable", p.name, code, raw, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	rp := s.c.ReadinessProbe
	bound := time.Duration(orDefault(rp.FailureThreshold, 3)+2) * time.Duration(orDefault(rp.PeriodSeconds, 10)) * time.Second
	deadline = time.Now().Add(bound)
	for p.probes.ready.Load() {
		if time.Now().After(deadline) {
			s.t.Fatalf("%s, removed, is still Ready after %s", p.name, bound)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if p.probes.livenessFailed.Load() {
		s.t.Fatalf("%s, removed, failed its liveness probe: the kubelet would restart it", p.name)
	}
	s.logf("  -> %s not Ready %s after its removal", p.name, time.Since(start).Round(time.Millisecond))
}

// ---- the docs' commands ----------------------------------------------------------------

// runDocSteps runs the first sh block after the line of docs/operations.md containing
// heading, with docker standing in for kubectl: `scale --replicas=N` is scaleTo, `rollout
// status` waits for every pod to be Ready, and `exec POD -- CMD` runs CMD through docker
// exec in POD's container (with the container's env, as kubectl exec has). `peers remove`
// and `cluster transfer-leadership` must succeed (the latter leaving its --to leading);
// `cluster status` is repeated until it lists one voter per pod still in the configuration,
// and a leader. The commands run back to back, as a script would.
func (s *stsEnv) runDocSteps(heading string) {
	s.t.Helper()
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		s.t.Fatal(err)
	}
	i := bytes.Index(doc, []byte(heading))
	if i < 0 {
		s.t.Fatalf("docs/operations.md has no %q", heading)
	}
	block := regexp.MustCompile("(?s)```sh\n(.*?)```").FindSubmatch(doc[i:])
	if block == nil {
		s.t.Fatalf("docs/operations.md: no sh block after %q", heading)
	}
	prefix := "kubectl -n " + stsNamespace + " "
	for _, line := range strings.Split(strings.ReplaceAll(string(block[1]), "\\\n", " "), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if j := strings.Index(line, " #"); j >= 0 {
			line = strings.TrimSpace(line[:j])
		}
		if !strings.HasPrefix(line, prefix) || strings.ContainsAny(line, `"'$|;&`) {
			s.t.Fatalf("docs/operations.md %q: cannot run %q here (want plain %s... commands)", heading, line, prefix)
		}
		s.logf("docs: %s", line)
		f := strings.Fields(strings.TrimPrefix(line, prefix))
		switch {
		case len(f) == 3 && f[0] == "scale" && f[1] == "statefulset/"+s.sts.Name && strings.HasPrefix(f[2], "--replicas="):
			n, err := strconv.Atoi(strings.TrimPrefix(f[2], "--replicas="))
			if err != nil {
				s.t.Fatalf("%q: %v", line, err)
			}
			// The pods about to go were taken out of the configuration: check them first.
			for i, p := range s.running() {
				if i >= n && p.removed {
					s.checkRemoved(p, s.services)
				}
			}
			s.scaleTo(n)
		case len(f) == 3 && f[0] == "rollout" && f[1] == "status" && f[2] == "statefulset/"+s.sts.Name:
			s.waitReady(s.running(), formationBound)
		case len(f) > 3 && f[0] == "exec" && f[2] == "--":
			s.execStep(line, f[1], f[3:])
		default:
			s.t.Fatalf("docs/operations.md %q: %q is not a command this test knows", heading, line)
		}
	}
}

var statusRow = regexp.MustCompile(`(?m)^(\S+)\s+(voter|nonvoter|staging)\s`)

func (s *stsEnv) execStep(line, pod string, cmd []string) {
	s.t.Helper()
	p := s.pods[pod]
	if p == nil || p.container == "" {
		s.t.Fatalf("%q: pod %s does not run", line, pod)
	}
	exec := append([]string{"exec", p.container}, cmd...)
	switch {
	case len(cmd) >= 4 && cmd[1] == "peers" && cmd[2] == "remove":
		out, code := s.dockerOut(exec...)
		s.logf("  -> exit %d: %s", code, strings.TrimSpace(out))
		if code != 0 {
			s.t.Fatalf("%q: exit %d: %s", line, code, out)
		}
		if r := s.pods[cmd[3]]; r != nil && r.container != "" {
			r.removed, r.removedAt = true, time.Now()
		}
	case len(cmd) >= 3 && cmd[1] == "cluster" && cmd[2] == "transfer-leadership":
		out, code := s.dockerOut(exec...)
		s.logf("  -> exit %d: %s", code, strings.TrimSpace(out))
		if code != 0 {
			s.t.Fatalf("%q: exit %d: %s", line, code, out)
		}
		for i, a := range cmd {
			if a == "--to" && i+1 < len(cmd) {
				if st := s.cluster(pod); st.LeaderID != cmd[i+1] {
					s.t.Fatalf("%q: the leader is %q", line, st.LeaderID)
				}
			}
		}
	case len(cmd) >= 3 && cmd[1] == "cluster" && cmd[2] == "status":
		want := 0
		for _, q := range s.running() {
			if !q.removed {
				want++
			}
		}
		deadline := time.Now().Add(membersBound)
		var out string
		for {
			var code int
			out, code = s.dockerOut(exec...)
			n := 0
			for _, m := range statusRow.FindAllStringSubmatch(out, -1) {
				if m[2] == "voter" {
					n++
				}
			}
			// The docs' condition: that many voters, a leader, each answering (a recent last
			// contact; an unreachable member has none).
			if code == 0 && n == want && len(statusRow.FindAllString(out, -1)) == want && !strings.HasPrefix(out, "leader -") && !strings.Contains(out, "unreachable") {
				s.logf("  -> %d voters:\n%s", n, out)
				return
			}
			if time.Now().After(deadline) {
				s.t.Fatalf("%q: not %d voters and a leader within %s (exit %d):\n%s", line, want, membersBound, code, out)
			}
			time.Sleep(time.Second)
		}
	default:
		s.t.Fatalf("%q: not a command this test knows how to check", line)
	}
}

// ---- kubelet probes --------------------------------------------------------------------

// kubeletProbes runs a container's readiness and liveness httpGet probes on its published
// port with the kubelet's timing: the first after initialDelaySeconds, then every
// periodSeconds, each with timeoutSeconds; 200-399 is success; Ready after successThreshold
// successes in a row, not Ready after failureThreshold failures in a row; liveness failed
// after failureThreshold failures in a row (where a kubelet restarts the container).
type kubeletProbes struct {
	ready, livenessFailed atomic.Bool
	done                  chan struct{}
	wg                    sync.WaitGroup
	once                  sync.Once
}

func startProbes(e *env, pod string, hostPort int, readiness, liveness *corev1.Probe) *kubeletProbes {
	k := &kubeletProbes{done: make(chan struct{})}
	run := func(kind string, pr *corev1.Probe, set func(ok bool, fails int)) {
		defer k.wg.Done()
		hg := pr.HTTPGet
		url := fmt.Sprintf("%s://127.0.0.1:%d%s", strings.ToLower(string(orScheme(hg.Scheme))), hostPort, hg.Path)
		client := &http.Client{Timeout: time.Duration(orDefault(pr.TimeoutSeconds, 1)) * time.Second}
		wait := time.Duration(pr.InitialDelaySeconds) * time.Second
		fails, oks := 0, 0
		for {
			select {
			case <-k.done:
				return
			case <-time.After(wait):
			}
			wait = time.Duration(orDefault(pr.PeriodSeconds, 10)) * time.Second
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			for _, h := range hg.HTTPHeaders {
				req.Header.Set(h.Name, h.Value)
			}
			resp, err := client.Do(req)
			ok := err == nil && resp.StatusCode >= 200 && resp.StatusCode < 400
			if err == nil {
				resp.Body.Close()
			}
			if ok {
				oks, fails = oks+1, 0
			} else {
				oks, fails = 0, fails+1
				e.logf("%s: %s probe failed (%d in a row): %v", pod, kind, fails, probeErr(resp, err))
			}
			set(oks >= int(orDefault(pr.SuccessThreshold, 1)), fails)
		}
	}
	k.wg.Add(2)
	go run("readiness", readiness, func(ok bool, fails int) {
		if ok {
			k.ready.Store(true)
		} else if fails >= int(orDefault(readiness.FailureThreshold, 3)) {
			k.ready.Store(false)
		}
	})
	go run("liveness", liveness, func(_ bool, fails int) {
		if fails >= int(orDefault(liveness.FailureThreshold, 3)) {
			k.livenessFailed.Store(true)
		}
	})
	return k
}

// stop ends the probes (before the container is stopped; nil: none running).
func (k *kubeletProbes) stop() {
	if k == nil {
		return
	}
	k.once.Do(func() { close(k.done) })
	k.wg.Wait()
}

func orDefault(v, def int32) int32 {
	if v == 0 {
		return def
	}
	return v
}

func orScheme(s corev1.URIScheme) corev1.URIScheme {
	if s == "" {
		return corev1.URISchemeHTTP
	}
	return s
}

func probeErr(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return "HTTP " + strconv.Itoa(resp.StatusCode)
}

// ---- cleanup ---------------------------------------------------------------------------

func (s *stsEnv) cleanup() {
	for _, name := range s.order {
		s.pods[name].probes.stop()
	}
	if s.t.Failed() {
		for _, name := range s.order {
			if p := s.pods[name]; p.container != "" {
				out, _ := s.dockerOut("logs", "--tail", "40", p.container)
				s.t.Logf("%s logs:\n%s", name, out)
			}
		}
	}
	var rm []string
	for _, name := range s.order {
		rm = append(rm, s.project+"-"+name)
	}
	rm = append(rm, s.extra...)
	if len(rm) > 0 {
		_, _ = s.dockerOut(append([]string{"rm", "-f", "-v"}, rm...)...)
	}
	for _, v := range s.volumes {
		_, _ = s.dockerOut("volume", "rm", "-f", v)
	}
	_, _ = s.dockerOut("network", "rm", s.network)
	left, _ := s.dockerOut("ps", "-aq", "--filter", "label=txcoord-e2e="+s.project)
	vols, _ := s.dockerOut("volume", "ls", "-q", "--filter", "name="+s.project)
	if strings.TrimSpace(left+vols) != "" {
		s.t.Errorf("cleanup left containers %q and volumes %q", left, vols)
	}
	s.logf("cleaned up: containers, volumes and network %s removed", s.project)
}

package k8s_test

// Decodes every manifest of deploy/k8s strictly into k8s.io/api types (duplicate keys and
// unknown fields are errors) and checks that the pieces agree: selectors and labels, Service
// ports and container ports, probes, the StatefulSet's serviceName, the PDB, and the
// container's flags against `txcoord serve --help`.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/txcoord/txcoord/deploy/k8s"
)

// load decodes the manifests of this directory (Load) or fails the test.
func load(t *testing.T) *k8s.Manifests {
	t.Helper()
	m, err := k8s.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := load(t)
	if m.StatefulSet == nil || m.PDB == nil || len(m.Services) != 2 {
		t.Fatalf("want a StatefulSet, a PDB and 2 Services; got sts=%v pdb=%v services=%d", m.StatefulSet != nil, m.PDB != nil, len(m.Services))
	}
	// The strict decoder does reject what it should.
	var svc corev1.Service
	if err := k8s.DecodeStrict([]byte("apiVersion: v1\nkind: Service\nspec:\n  clusterIp: None\n"), &svc); err == nil {
		t.Error("an unknown field (clusterIp) was accepted")
	}
	if err := k8s.DecodeStrict([]byte("apiVersion: v1\nkind: Service\nkind: Service\n"), &svc); err == nil {
		t.Error("a duplicate key was accepted")
	}
}

func selects(sel map[string]string, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestManifestsAgree(t *testing.T) {
	m := load(t)
	sts := m.StatefulSet
	pod := sts.Spec.Template
	podLabels := pod.Labels
	if sts.Spec.Selector == nil || len(sts.Spec.Selector.MatchExpressions) > 0 || !selects(sts.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("StatefulSet selector %v does not select the pod labels %v", sts.Spec.Selector, podLabels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] == 0 || ports["raft"] == 0 {
		t.Fatalf("container ports %v: want http and raft", ports)
	}
	resolve := func(where string, p intstr.IntOrString) int32 {
		if p.Type == intstr.String {
			n, ok := ports[p.StrVal]
			if !ok {
				t.Errorf("%s: port name %q is not a container port", where, p.StrVal)
			}
			return n
		}
		if !slices.Contains([]int32{ports["http"], ports["raft"]}, p.IntVal) {
			t.Errorf("%s: port %d is not a container port", where, p.IntVal)
		}
		return p.IntVal
	}

	// Services.
	peers, ok := m.Services[sts.Spec.ServiceName]
	if !ok {
		t.Fatalf("StatefulSet serviceName %q is not one of the Services", sts.Spec.ServiceName)
	}
	if peers.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s (the StatefulSet's serviceName) must be headless", peers.Name)
	}
	if !peers.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s must publish not-ready pods: they must find each other before any is ready", peers.Name)
	}
	var client *corev1.Service
	for name, s := range m.Services {
		if !selects(s.Spec.Selector, podLabels) {
			t.Errorf("Service %s selector %v does not select the pods %v", name, s.Spec.Selector, podLabels)
		}
		for _, p := range s.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			resolve("Service "+name+" port "+p.Name, target)
		}
		if name != peers.Name {
			client = s
		}
	}
	if client == nil || client.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatal("no client Service with a cluster IP")
	}
	if len(client.Spec.Ports) != 1 || resolve("client Service", client.Spec.Ports[0].TargetPort) != ports["http"] {
		t.Errorf("the client Service must target the HTTP port")
	}
	raftPort := int32(0)
	for _, p := range peers.Spec.Ports {
		if p.TargetPort.StrVal == "raft" || p.TargetPort.IntVal == ports["raft"] {
			raftPort = p.Port
		}
	}
	if raftPort != ports["raft"] {
		t.Errorf("headless Service must expose the raft port on the same number (peers dial pod-name.%s:%d)", peers.Name, ports["raft"])
	}

	// Probes.
	for name, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET", name)
			continue
		}
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[name]
		if pr.HTTPGet.Path != want {
			t.Errorf("%s probe path %q, want %q", name, pr.HTTPGet.Path, want)
		}
		if resolve(name+" probe", pr.HTTPGet.Port) != ports["http"] {
			t.Errorf("%s probe must hit the HTTP port", name)
		}
	}

	// PDB.
	if m.PDB.Spec.Selector == nil || !selects(m.PDB.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("PDB selector %v does not select the pods", m.PDB.Spec.Selector)
	}
	if mu := m.PDB.Spec.MaxUnavailable; mu == nil || mu.Type != intstr.Int || mu.IntVal != 1 || m.PDB.Spec.MinAvailable != nil {
		t.Errorf("PDB: want maxUnavailable 1 (keeps a quorum of 3), got %v / minAvailable %v", mu, m.PDB.Spec.MinAvailable)
	}

	// Pod spec: scheduling, shutdown, security, resources, storage.
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("replicas: want 3")
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy must be Parallel: with OrderedReady the first pod waits for a readiness that needs the others")
	}
	// Anti-affinity: preferred per node (and zone) by default, so that 3 pods schedule on
	// a small cluster; the required rule is the component's (TestStrictAntiAffinityComponent).
	aa := pod.Spec.Affinity
	if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Error("want a pod anti-affinity with no required rule by default")
	} else {
		perHost := false
		for _, w := range aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			term := w.PodAffinityTerm
			if term.LabelSelector == nil || !selects(term.LabelSelector.MatchLabels, podLabels) {
				t.Errorf("anti-affinity term %+v must select the pods", term)
			}
			perHost = perHost || term.TopologyKey == "kubernetes.io/hostname"
		}
		if !perHost {
			t.Error("want a preferred anti-affinity per hostname")
		}
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < 30 {
		t.Errorf("terminationGracePeriodSeconds must leave time for the leadership transfer (>= 30 s)")
	}
	psc := pod.Spec.SecurityContext
	uid := imageUID(t)
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != uid || psc.FSGroup == nil || *psc.FSGroup != uid {
		t.Errorf("pod securityContext: want runAsNonRoot, runAsUser and fsGroup %d (the image's user)", uid)
	}
	csc := c.SecurityContext
	if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Error("container securityContext: want readOnlyRootFilesystem and no privilege escalation")
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Error("no memory limit")
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("want one volumeClaimTemplate")
	}
	claim := sts.Spec.VolumeClaimTemplates[0].Name
	var dataDir string
	for _, vm := range c.VolumeMounts {
		if vm.Name == claim {
			dataDir = vm.MountPath
		}
	}
	if dataDir == "" {
		t.Fatalf("the container does not mount the claim %q", claim)
	}

	// Arguments: every flag exists, env references are defined, and the values agree with
	// the ports, the Services and the volume.
	if len(c.Command) > 0 || len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args must start with serve (the image's entrypoint is txcoord): command %v args %v", c.Command, c.Args)
	}
	flags := serveFlags(t)
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			if fp := e.ValueFrom.FieldRef.FieldPath; fp != "metadata.name" && fp != "metadata.namespace" {
				t.Errorf("env %s: unexpected fieldPath %s", e.Name, fp)
			}
		}
	}
	args := map[string]string{}
	for _, a := range c.Args[1:] {
		if !strings.HasPrefix(a, "--") || !strings.Contains(a, "=") {
			t.Errorf("arg %q: write flags as --name=value", a)
			continue
		}
		name, val, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !flags[name] {
			t.Errorf("arg --%s: `txcoord serve --help` has no such flag", name)
		}
		for _, ref := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(val, -1) {
			if !env[ref[1]] {
				t.Errorf("arg --%s uses $(%s), which the container's env does not define", name, ref[1])
			}
		}
		args[name] = val
	}
	portOf := func(flag string) string {
		_, p, err := splitHostPort(args[flag])
		if err != nil {
			t.Errorf("--%s=%q: %v", flag, args[flag], err)
		}
		return p
	}
	expect := map[string]string{
		"node-id":          "$(POD_NAME)",
		"data-dir":         dataDir,
		"bootstrap-expect": strconv.Itoa(int(*sts.Spec.Replicas)),
	}
	for k, v := range expect {
		if args[k] != v {
			t.Errorf("--%s=%q, want %q", k, args[k], v)
		}
	}
	for flag, port := range map[string]int32{"http-addr": ports["http"], "http-advertise": ports["http"], "raft-addr": ports["raft"], "raft-advertise": ports["raft"], "join": ports["raft"]} {
		if portOf(flag) != strconv.Itoa(int(port)) {
			t.Errorf("--%s=%q does not use the container port %d", flag, args[flag], port)
		}
	}
	podDNS := "$(POD_NAME)." + peers.Name + "."
	for _, flag := range []string{"raft-advertise", "http-advertise"} {
		if !strings.HasPrefix(args[flag], podDNS) {
			t.Errorf("--%s=%q: want the pod's stable name under the headless Service (%s...)", flag, args[flag], podDNS)
		}
	}
	if !strings.HasPrefix(args["join"], peers.Name+".") {
		t.Errorf("--join=%q: want the headless Service's name", args["join"])
	}
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", "", fmt.Errorf("no port")
	}
	return s[:i], s[i+1:], nil
}

// imageUID is the uid of the image's txcoord user (deploy/docker/passwd).
func imageUID(t *testing.T) int64 {
	raw, err := os.ReadFile("../docker/passwd")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Split(l, ":")
		if len(f) > 2 && f[0] == "txcoord" {
			uid, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return uid
		}
	}
	t.Fatal("no txcoord user in deploy/docker/passwd")
	return 0
}

var (
	flagsOnce sync.Once
	flagSet   map[string]bool
	flagsErr  error
)

// serveFlags builds the binary and reads the long flag names from `txcoord serve --help`.
func serveFlags(t *testing.T) map[string]bool {
	t.Helper()
	flagsOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			flagsErr = err
			return
		}
		bin := filepath.Join(t.TempDir(), "txcoord")
		build := exec.Command(goBin, "build", "-o", bin, "../../cmd/txcoord")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			flagsErr = fmt.Errorf("go build: %v: %s", err, out)
			return
		}
		out, err := exec.Command(bin, "serve", "--help").CombinedOutput()
		if err != nil {
			flagsErr = fmt.Errorf("txcoord serve --help: %v: %s", err, out)
			return
		}
		flagSet = map[string]bool{}
		re := regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9-]+)`)
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				flagSet[m[1]] = true
			}
		}
		if !flagSet["node-id"] || !flagSet["bootstrap-expect"] {
			flagsErr = fmt.Errorf("could not read the flags from:\n%s", out)
		}
	})
	if flagsErr != nil {
		t.Fatal(flagsErr)
	}
	return flagSet
}

// The image is set through kustomize's images: the container names exactly the image an
// images entry replaces.
func TestImageIsSetThroughKustomize(t *testing.T) {
	m := load(t)
	img := m.StatefulSet.Spec.Template.Spec.Containers[0].Image
	// What `make image` builds (IMAGE's default) is what the pods run.
	if got := m.ImageFor(img); got != "txcoord:dev" {
		t.Errorf("the kustomization's images entries turn %q into %q, want txcoord:dev", img, got)
	}
	for _, e := range m.Kustomization.Images {
		if e.Name == img && e.NewName != "" && e.NewTag != "" {
			return
		}
	}
	t.Errorf("container image %q is not replaced by an images entry with newName and newTag: %+v", img, m.Kustomization.Images)
}

// The Raft port admits only the StatefulSet's pods; the HTTP port stays reachable.
func TestNetworkPolicyGuardsRaftPort(t *testing.T) {
	m := load(t)
	np := m.NetworkPolicy
	if np == nil {
		t.Fatal("no NetworkPolicy")
	}
	podLabels := m.StatefulSet.Spec.Template.Labels
	if !selects(np.Spec.PodSelector.MatchLabels, podLabels) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Fatalf("NetworkPolicy must select the pods and restrict ingress: %+v", np.Spec)
	}
	ports := map[string]int32{}
	for _, p := range m.StatefulSet.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = p.ContainerPort
	}
	raftOK, httpOK := false, false
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil {
				t.Errorf("ingress rule without a port: it would open every port")
				continue
			}
			switch p.Port.IntValue() {
			case int(ports["raft"]):
				if len(rule.From) == 0 {
					t.Errorf("the Raft port is open to everyone")
				}
				for _, f := range rule.From {
					if f.PodSelector == nil || !selects(f.PodSelector.MatchLabels, podLabels) || f.NamespaceSelector != nil || f.IPBlock != nil {
						t.Errorf("the Raft port admits %+v, want only the StatefulSet's pods", f)
					}
				}
				raftOK = true
			case int(ports["http"]):
				httpOK = true
			}
		}
	}
	if !raftOK || !httpOK {
		t.Errorf("NetworkPolicy must admit the Raft port (from the pods) and the HTTP port: raft %v http %v", raftOK, httpOK)
	}
}

// Tokens come from the Secret txcoord-tokens, through the variables the node reads
// (cmd/txcoord/security.go), and the Secret is required: no token, no start.
func TestTokensFromSecret(t *testing.T) {
	m := load(t)
	want := map[string]string{"TXCOORD_API_TOKENS": "api-tokens", "TXCOORD_CLUSTER_TOKEN": "cluster-token"}
	for _, e := range m.StatefulSet.Spec.Template.Spec.Containers[0].Env {
		key, ok := want[e.Name]
		if !ok {
			continue
		}
		ref := e.ValueFrom
		if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != "txcoord-tokens" || ref.SecretKeyRef.Key != key {
			t.Errorf("env %s: want secretKeyRef txcoord-tokens/%s, got %+v", e.Name, key, ref)
		} else if ref.SecretKeyRef.Optional != nil && *ref.SecretKeyRef.Optional {
			t.Errorf("env %s: the Secret must not be optional (tokens would be off silently)", e.Name)
		}
		delete(want, e.Name)
	}
	if len(want) > 0 {
		t.Errorf("env lacks %v", want)
	}
	src, err := os.ReadFile(filepath.Join("..", "..", "cmd", "txcoord", "security.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"TXCOORD_API_TOKENS", "TXCOORD_CLUSTER_TOKEN"} {
		if !bytes.Contains(src, []byte(`"`+v+`"`)) {
			t.Errorf("cmd/txcoord/security.go does not read %s", v)
		}
	}
}

// The component that makes anti-affinity required decodes strictly, targets the
// StatefulSet, and its patch adds a required per-node rule selecting the pods.
func TestStrictAntiAffinityComponent(t *testing.T) {
	m := load(t)
	dir := filepath.Join("components", "strict-anti-affinity")
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var comp struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Patches    []struct {
			Path   string `json:"path"`
			Target struct {
				Kind string `json:"kind"`
				Name string `json:"name"`
			} `json:"target"`
		} `json:"patches"`
	}
	if err := k8s.DecodeStrict(raw, &comp); err != nil {
		t.Fatal(err)
	}
	if comp.APIVersion != "kustomize.config.k8s.io/v1alpha1" || comp.Kind != "Component" || len(comp.Patches) != 1 ||
		comp.Patches[0].Target.Kind != "StatefulSet" || comp.Patches[0].Target.Name != m.StatefulSet.Name {
		t.Fatalf("component: %+v", comp)
	}
	raw, err = os.ReadFile(filepath.Join(dir, comp.Patches[0].Path))
	if err != nil {
		t.Fatal(err)
	}
	var ops []struct {
		Op    string                   `json:"op"`
		Path  string                   `json:"path"`
		Value []corev1.PodAffinityTerm `json:"value"`
	}
	if err := k8s.DecodeStrict(raw, &ops); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || ops[0].Op != "add" || ops[0].Path != "/spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution" {
		t.Fatalf("patch: %+v", ops)
	}
	for _, term := range ops[0].Value {
		if term.TopologyKey != "kubernetes.io/hostname" || term.LabelSelector == nil || !selects(term.LabelSelector.MatchLabels, m.StatefulSet.Spec.Template.Labels) {
			t.Errorf("required term %+v must select the pods per hostname", term)
		}
	}
	// The path the patch adds to exists in the StatefulSet.
	if m.StatefulSet.Spec.Template.Spec.Affinity == nil || m.StatefulSet.Spec.Template.Spec.Affinity.PodAntiAffinity == nil {
		t.Error("the StatefulSet has no podAntiAffinity for the patch to add to")
	}
}

// When kubectl is installed, `kubectl kustomize` renders the manifests, also with the
// strict anti-affinity component, and the image entry takes effect.
func TestKustomizeBuilds(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	out, err := exec.Command(kubectl, "kustomize", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("image: txcoord:dev")) || !bytes.Contains(out, []byte("kind: NetworkPolicy")) {
		t.Errorf("rendered manifests lack the image or the NetworkPolicy")
	}
	dir := t.TempDir()
	for _, f := range []string{"service-peers.yaml", "service.yaml", "statefulset.yaml", "pdb.yaml", "networkpolicy.yaml",
		"components/strict-anti-affinity/kustomization.yaml", "components/strict-anti-affinity/anti-affinity.yaml"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_ = os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, f), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := os.ReadFile("kustomization.yaml")
	raw = bytes.Replace(raw, []byte("# components:\n#   - components/strict-anti-affinity"), []byte("components:\n  - components/strict-anti-affinity"), 1)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kubectl, "kustomize", ".")
	cmd.Dir = dir
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize with the component: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("requiredDuringSchedulingIgnoredDuringExecution")) {
		t.Errorf("the component did not add the required anti-affinity")
	}
}

// Command gendatadir writes a golden data directory with a real `txcoord serve` binary of an
// earlier build: a single-node cluster whose Raft snapshot holds endpoint records and
// transactions in every status, with more log entries after the snapshot. It lives in
// testdata so that the module never builds it; it imports nothing of txcoord and talks to
// the binary over HTTP only. See ../README.md for how it was run.
//
//	go run ./cluster/testdata/gendatadir -bin /tmp/txcoord-9b29729 -out cluster/testdata/datadir-9b29729.tar.gz
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// participants serves every participant the transactions name, by path:
//
//	/ok/{a,b,c}/*   ACK everything
//	/nack/*         NACK prepare ("no rooms"), ACK rollback
//	/hang/*         prepare never answers (until the process dies); ACK rollback
//	/busy/*         ACK prepare, 503 with Retry-After: 3600 on commit and rollback
//	/broken/*       ACK prepare, HTTP 500 "disk full" on commit
func participants(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	ack := func() { w.Header().Set("Content-Type", "application/json"); io.WriteString(w, `{"status":"ACK"}`) }
	switch {
	case strings.HasPrefix(p, "/ok/"):
		ack()
	case strings.HasPrefix(p, "/nack/"):
		if strings.HasSuffix(p, "/prepare") {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"status":"NACK","reason":"no rooms"}`)
			return
		}
		ack()
	case strings.HasPrefix(p, "/hang/"):
		if strings.HasSuffix(p, "/prepare") {
			<-r.Context().Done()
			return
		}
		ack()
	case strings.HasPrefix(p, "/busy/"):
		if strings.HasSuffix(p, "/prepare") {
			ack()
			return
		}
		w.Header().Set("Retry-After", "3600")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	case strings.HasPrefix(p, "/broken/"):
		if strings.HasSuffix(p, "/prepare") {
			ack()
			return
		}
		http.Error(w, "disk full", http.StatusInternalServerError)
	default:
		http.NotFound(w, r)
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type view struct {
	TransactionID  string `json:"transactionId"`
	Status         string `json:"status"`
	Decision       string `json:"decision,omitempty"`
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
	Index          uint64 `json:"index"`
	Participants   []struct {
		Prepare      string `json:"prepare"`
		Commit       string `json:"commit"`
		Rollback     string `json:"rollback"`
		Vote         string `json:"vote,omitempty"`
		Acknowledged bool   `json:"acknowledged"`
	} `json:"participants"`
}

// Expect is written next to the data dir in the tarball: what the old build reported just
// before it was killed.
type Expect struct {
	Build             string          `json:"build"`
	SnapshotIndex     uint64          `json:"snapshotIndex"`
	SnapshotEndpoints uint64          `json:"snapshotEndpoints"`
	Cluster           json.RawMessage `json:"cluster"`
	Transactions      []view          `json:"transactions"` // ordered by id
}

func main() {
	bin := flag.String("bin", "", "txcoord binary of the old build")
	build := flag.String("build", "", "commit the binary was built from")
	out := flag.String("out", "", "tar.gz to write")
	flag.Parse()
	work, err := os.MkdirTemp("", "gendatadir")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)
	data := filepath.Join(work, "data")

	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(pl, http.HandlerFunc(participants))
	pbase := "http://" + pl.Addr().String()

	hp, rp := freePort(), freePort()
	api := fmt.Sprintf("http://127.0.0.1:%d", hp)
	logf, err := os.Create(filepath.Join(work, "serve.log"))
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(*bin, "serve", "--node-id", "n1",
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", hp), "--raft-addr", fmt.Sprintf("127.0.0.1:%d", rp),
		"--peers", fmt.Sprintf("n1=127.0.0.1:%d@127.0.0.1:%d", rp, hp), "--data-dir", data,
		"--snapshot-threshold", "8", "--max-timeout", "24h", "--phase-two-max-attempts", "3",
		"--phase-two-wait", "300ms")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	dump := func() {
		b, _ := os.ReadFile(filepath.Join(work, "serve.log"))
		os.Stderr.Write(b)
	}
	waitFor := func(what string, d time.Duration, cond func() bool) {
		end := time.Now().Add(d)
		for !cond() {
			if time.Now().After(end) {
				_ = cmd.Process.Kill()
				dump()
				log.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("readiness", 30*time.Second, func() bool {
		resp, err := http.Get(api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	var wg sync.WaitGroup
	post := func(key string, timeoutMs int, services ...any) {
		body, _ := json.Marshal(map[string]any{"services": services, "timeout": timeoutMs})
		req, _ := http.NewRequest("POST", api+"/v1/transactions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return // the hanging ones end when the node is killed
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			log.Printf("POST %s: %d %s", key, resp.StatusCode, bytes.TrimSpace(b))
		}()
	}
	list := func() map[string]view {
		resp, err := http.Get(api + "/v1/transactions?limit=1000")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var l struct{ Transactions []view }
		if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
			return nil
		}
		m := map[string]view{}
		for _, v := range l.Transactions {
			m[v.IdempotencyKey] = v
		}
		return m
	}
	reach := func(want map[string]string) {
		waitFor(fmt.Sprint("statuses ", want), 120*time.Second, func() bool {
			m := list()
			for k, st := range want {
				if m[k].Status != st {
					return false
				}
			}
			return true
		})
	}
	ok := func(name string) string { return pbase + "/ok/" + name + "/prepare" }

	// Before the snapshot.
	post("a-committed", 5000, ok("a"), ok("b"))
	post("a-rolled-back", 5000, ok("a"), pbase+"/nack/prepare")
	post("a-committing", 5000, ok("a"), pbase+"/busy/prepare")
	post("a-rolling-back", 5000, pbase+"/nack/prepare", pbase+"/busy/prepare")
	post("a-failed", 5000, pbase+"/broken/prepare")
	post("a-preparing", 86_400_000, ok("a"), pbase+"/hang/prepare")
	post("a-explicit", 5000, map[string]string{"prepare": pbase + "/ok/x/p", "commit": pbase + "/ok/x/c", "rollback": pbase + "/ok/x/r"})
	reach(map[string]string{"a-committed": "committed", "a-rolled-back": "rolled_back", "a-committing": "committing",
		"a-rolling-back": "rolling_back", "a-failed": "failed", "a-preparing": "preparing", "a-explicit": "committed"})

	// Raft checks the snapshot threshold every SnapshotInterval to twice that.
	var snapDir string
	waitFor("a snapshot", 150*time.Second, func() bool {
		m, _ := filepath.Glob(filepath.Join(data, "snapshots", "*", "state.bin"))
		if len(m) == 1 {
			snapDir = filepath.Dir(m[0])
			_, err := os.Stat(filepath.Join(snapDir, "meta.json"))
			return err == nil
		}
		return false
	})
	log.Printf("snapshot %s", snapDir)

	// After the snapshot: a new endpoint, and a repeated key.
	post("b-committed", 5000, ok("a"), ok("c"))
	post("b-rolled-back", 5000, pbase+"/nack/prepare", ok("b"))
	post("b-committing", 5000, pbase+"/busy/prepare", ok("b"))
	post("b-preparing", 86_400_000, pbase+"/hang/prepare")
	reach(map[string]string{"b-committed": "committed", "b-rolled-back": "rolled_back", "b-committing": "committing", "b-preparing": "preparing"})
	post("b-committed", 5000, ok("a"), ok("c")) // the same request again: the same transaction
	time.Sleep(500 * time.Millisecond)          // let the repeat be answered (it writes nothing)

	// Read the transactions between two equal cluster states, so that no entry (a phase-two
	// retry's Progress) lands between what is recorded and the kill.
	cluster := func() (json.RawMessage, uint64) {
		resp, err := http.Get(api + "/v1/cluster")
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var st struct{ AppliedIndex uint64 }
		if err := json.Unmarshal(b, &st); err != nil {
			log.Fatal(err)
		}
		return b, st.AppliedIndex
	}
	var m map[string]view
	var clusterJSON json.RawMessage
	for {
		before, i := cluster()
		m = list()
		if _, j := cluster(); i == j {
			clusterJSON = before
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		log.Fatal(err)
	}
	_ = cmd.Wait()
	pl.Close()

	if s, _ := filepath.Glob(filepath.Join(data, "snapshots", "*", "state.bin")); len(s) != 1 {
		log.Fatalf("want exactly one snapshot, have %v: run again", s)
	}
	exp := Expect{Build: *build, Cluster: clusterJSON}
	var meta struct{ Index uint64 }
	b, err := os.ReadFile(filepath.Join(snapDir, "meta.json"))
	if err != nil {
		log.Fatal(err)
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		log.Fatal(err)
	}
	exp.SnapshotIndex = meta.Index
	state, err := os.ReadFile(filepath.Join(snapDir, "state.bin"))
	if err != nil {
		log.Fatal(err)
	}
	// "TXCS", version, then the header record: applied, nTxns, nKeys, nMembers, nEndpoints.
	if string(state[:4]) != "TXCS" || state[4] != 2 {
		log.Fatalf("snapshot starts %q", state[:5])
	}
	hdr := state[5:]
	_, n := binary.Uvarint(hdr)
	hdr = hdr[n:]
	var vals [5]uint64
	for i := range vals {
		vals[i], n = binary.Uvarint(hdr)
		hdr = hdr[n:]
	}
	exp.SnapshotEndpoints = vals[4]
	if exp.SnapshotEndpoints == 0 {
		log.Fatal("the snapshot holds no endpoint records")
	}
	for _, k := range []string{"a-committed", "a-rolled-back", "a-committing", "a-rolling-back", "a-failed", "a-preparing", "a-explicit",
		"b-committed", "b-rolled-back", "b-committing", "b-preparing"} {
		v, ok := m[k]
		if !ok {
			log.Fatalf("no transaction with key %s", k)
		}
		exp.Transactions = append(exp.Transactions, v)
	}
	for _, v := range exp.Transactions {
		if strings.HasPrefix(v.IdempotencyKey, "b-") && v.Index <= meta.Index {
			log.Fatalf("%s at index %d is in the snapshot (index %d): run again", v.IdempotencyKey, v.Index, meta.Index)
		}
	}
	ej, _ := json.MarshalIndent(exp, "", "  ")
	if err := os.WriteFile(filepath.Join(work, "expect.json"), append(ej, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := writeTarGz(*out, work, []string{"expect.json", "data"}); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s: snapshot at index %d with %d endpoints", *out, meta.Index, exp.SnapshotEndpoints)
	os.Stdout.Write(ej)
}

// writeTarGz archives the named files and directories of root, with fixed times and modes.
func writeTarGz(out, root string, names []string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	for _, name := range names {
		err := filepath.WalkDir(filepath.Join(root, name), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Mode: 0o644, Format: tar.FormatPAX}
			if d.IsDir() {
				hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
				return tw.WriteHeader(hdr)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(b))
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		})
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

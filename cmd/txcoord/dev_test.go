package main

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDevHelpShowsTheValuesDevUses: dev runs with Raft timings of its own (300ms, 300ms,
// 150ms) and no soft memory limit; its --help must show those, not serve's defaults, and
// the values it runs with must be the ones shown.
func TestDevHelpShowsTheValuesDevUses(t *testing.T) {
	stdout, stderr, code := run(t, "dev", "--help")
	if code != 0 {
		t.Fatalf("dev --help: exit %d %s", code, stderr)
	}
	cmd := newDevCmd()
	if err := cmd.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range devDefaults {
		line := regexp.MustCompile(`(?m)^\s+--` + d[0] + `\b.*$`).FindString(stdout)
		if line == "" {
			t.Errorf("--%s missing from dev --help:\n%s", d[0], stdout)
			continue
		}
		want := "(default " + d[1] + ")"
		if d[1] == "0" {
			want = "" // pflag shows no default for a zero value
		}
		if want != "" && !strings.Contains(line, want) || want == "" && strings.Contains(line, "(default") {
			t.Errorf("dev --help line %q, want %q", line, want)
		}
		fl := cmd.Flags().Lookup(d[0])
		if fl.Value.String() != d[1] || fl.Changed {
			t.Errorf("--%s is %q (changed %v) in dev, want %q as a default", d[0], fl.Value.String(), fl.Changed, d[1])
		}
	}
	for _, serveDefault := range []string{"--heartbeat-timeout duration.*default 1s", "--leader-lease-timeout duration.*default 500ms", "--memory-limit-mib.*default 224"} {
		if regexp.MustCompile(serveDefault).MatchString(stdout) {
			t.Errorf("dev --help shows serve's default %q", serveDefault)
		}
	}
	// serve keeps its own.
	stdout, _, _ = run(t, "serve", "--help")
	if !regexp.MustCompile(`--heartbeat-timeout duration.*\(default 1s\)`).MatchString(stdout) {
		t.Errorf("serve --help lost its heartbeat default:\n%s", stdout)
	}
}

// TestDevOnce: dev on free ports starts three nodes and the demo participants, sends the
// sample through a follower, reports its answer and which node leads, and exits.
func TestDevOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	stdout, stderr, code := run(t, "dev", "--once", "--http-port", "0", "--raft-port", "0", "--participant-port", "0")
	if code != 0 {
		t.Fatalf("dev --once: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"Sample transaction (commit) to http://127.0.0.1:", "HTTP 200", `"committed"`, "Coordinator nodes:", "(leader)", "Try it:"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dev --once output lacks %q:\n%s", want, stdout)
		}
	}
	if nodes := regexp.MustCompile(`(?m)^  n[123]  http://127\.0\.0\.1:\d+  \((leader|follower)\)$`).FindAllString(stdout, -1); len(nodes) != 3 {
		t.Errorf("dev --once lists nodes %q, want n1, n2, n3:\n%s", nodes, stdout)
	}
}

// TestDevBusyPort: a port dev cannot have is named, with the flags that choose others.
func TestDevBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	_, stderr, code := run(t, "dev", "--once", "--http-port", "0", "--raft-port", strconv.Itoa(port), "--participant-port", "0")
	want := fmt.Sprintf("listening on 127.0.0.1:%d (pick other ports with --http-port, --raft-port, --participant-port, or 0 for free ones)", port)
	if code == 0 || !strings.Contains(stderr, want) {
		t.Fatalf("dev with --raft-port %d in use: exit %d, stderr %q, want %q", port, code, stderr, want)
	}
}

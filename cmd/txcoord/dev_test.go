package main

import (
	"regexp"
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

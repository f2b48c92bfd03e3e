package participant_test

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// deps returns the transitive imports of pkg (standard library included) as go list
// reports them.
func deps(t *testing.T, pkg string) []listedPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Standard", pkg).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list -deps %s listed nothing", pkg)
	}
	return pkgs
}

type listedPackage struct {
	ImportPath string
	Standard   bool
}

// The library a service author imports must not pull in the coordinator: no Raft, no FSM,
// no cluster, no HTTP API, no coordinator client (issue 14, item 6). A service's binary
// then carries only the library, the wire protocol, bbolt, OpenTelemetry's trace context
// (to read the coordinator's traceparent) and the standard library.
func TestLibraryImportsNothingOfTheCoordinator(t *testing.T) {
	const mod = "github.com/txcoord/txcoord/"
	forbidden := []string{mod + "coordinator", mod + "fsm", mod + "cluster", mod + "httpapi", mod + "server", mod + "internal", "github.com/hashicorp/raft"}
	for _, p := range deps(t, mod+"participant") {
		for _, f := range forbidden {
			if p.ImportPath == f || strings.HasPrefix(p.ImportPath, f+"/") {
				t.Errorf("participant imports %s (transitively); the library must not depend on the coordinator", p.ImportPath)
			}
		}
	}
}

// The wire protocol is importable by any Go program, coordinator or participant, without
// dependencies: it imports the standard library only.
func TestProtocolIsStandardLibraryOnly(t *testing.T) {
	const pkg = "github.com/txcoord/txcoord/participant/protocol"
	for _, p := range deps(t, pkg) {
		if !p.Standard && p.ImportPath != pkg {
			t.Errorf("participant/protocol imports %s; it must import the standard library only", p.ImportPath)
		}
	}
}

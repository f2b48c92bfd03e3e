// Package version names the txcoord build: its release version, the commit it was built
// from and the feature level it supports. It depends on the standard library only, so any
// package (the FSM included) can report which build it is.
package version

import (
	"runtime/debug"
	"strconv"
)

// Version is the release this build belongs to. Release builds set it with
// -ldflags "-X github.com/txcoord/txcoord/version.Version=1.2.3"; `make build` sets it from
// `git describe`.
var Version = "0.4.0-dev"

// Commit is the short commit hash the binary was built from, set by `make build` through
// -ldflags; when empty, the module's VCS stamp (if the build kept one) is used.
var Commit = ""

// FeatureLevel is the highest feature level this build can apply and serve. Every log
// command type belongs to a level; a cluster enables a level only once every server
// advertises it (see fsm.SetFeatures and docs/operations.md, "Upgrades"). Level 0 is what
// every earlier build knows: command types 1 to 11. Only ever increase it, with the
// command types that need it.
//
//	1: SetFeatures (type 12) itself; the cluster's level is logged and snapshotted.
//	2: Begin with participant payloads (type 13); snapshot version 4 (payloads, retriedAt).
//	3: presumed abort with inquiry and the fast mode (issue 17): PresumeAbort (type 14) and
//	   FastDecide (type 15); Prune keeps a record until its deadline too and the FSM tracks
//	   the retention horizon; snapshot version 5 (the horizon).
//	4: Begin with a trace context (type 16, "traced Begin"); snapshot version 6 (the trace
//	   context of each transaction).
const FeatureLevel uint32 = 4

// String returns "VERSION (COMMIT)" or just VERSION when the commit is unknown.
func String() string {
	if c := CommitHash(); c != "" {
		return Version + " (" + c + ")"
	}
	return Version
}

// CommitHash returns Commit, or the VCS revision the Go toolchain stamped into the binary
// (first 12 characters, "+dirty" for a modified tree), or "".
func CommitHash() string {
	if Commit != "" {
		return Commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty, _ = strconv.ParseBool(s.Value)
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && dirty {
		rev += "+dirty"
	}
	return rev
}

package main

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/internal/participanttest"
	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// run runs the CLI with args and returns stdout, stderr and the exit status main would use.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.Execute()
	code := 0
	if err != nil {
		var ec exitCode
		if asExit(err, &ec) {
			code = int(ec)
		} else {
			code = 1
			errb.WriteString(err.Error())
		}
	}
	return out.String(), errb.String(), code
}

// The tokens of tokenCluster: clientTok for clients, clusterTok for nodes and operators.
const clientTok, clusterTok = "cli-client-token-0123456789", "cli-cluster-token-0123456789"

// tokenCluster starts a 3-node cluster that requires tokens (clientTok, clusterTok), with
// no token or node in the CLI's environment, and returns it with its leader's index.
func tokenCluster(t *testing.T) (*servertest.Cluster, int) {
	t.Setenv(envToken, "")
	t.Setenv(envAPITokens, "")
	t.Setenv(envClusterToken, "")
	t.Setenv("TXCOORD_NODE", "")
	cl := servertest.Start(t, servertest.Options{Tune: func(_ int, c *server.Config) {
		a, _ := httpapi.NewTokenSet(clientTok)
		k, _ := httpapi.NewTokenSet(clusterTok)
		c.API.Auth = &httpapi.Auth{API: a, Cluster: k}
	}})
	return cl, cl.WaitLeader(30 * time.Second)
}

// Every transaction command against a real cluster with tokens: outputs, exit statuses.
func TestTxnCommands(t *testing.T) {
	cl, leader := tokenCluster(t)
	node := cl.Node((leader + 1) % 3).URL()
	fp := participanttest.New(t)

	if _, stderr, code := run(t, "submit", "--node", node, "--timeout", "2000", fp.Endpoints().Prepare); code != exitError || !strings.Contains(stderr, "unauthorized") {
		t.Fatalf("submit without a token: exit %d, %s", code, stderr)
	}
	stdout, stderr, code := run(t, "submit", "--node", node, "--token", clientTok, "--timeout", "2000", "-o", "json", "--key", "cli-1", fp.Endpoints().Prepare)
	var out api.Outcome
	if code != exitOK || json.Unmarshal([]byte(stdout), &out) != nil || out.Status != api.StatusCommitted {
		t.Fatalf("submit: exit %d, %s %s", code, stdout, stderr)
	}
	t.Setenv(envToken, clientTok) // the environment works as well as --token
	fp.Set(participant.PhasePrepare, participanttest.NACK("sold out"))
	if stdout, _, code := run(t, "submit", "--node", node, "--timeout", "2000", fp.Endpoints().Prepare); code != exitRolledBack || !strings.Contains(stdout, "rolled_back") || !strings.Contains(stdout, "sold out") {
		t.Fatalf("submit NACK: exit %d, %s", code, stdout)
	}
	if err := cl.Eventually(30*time.Second, func() error {
		stdout, stderr, code := run(t, "txn", "get", out.TransactionID, "--node", node, "-o", "json")
		var v api.TransactionView
		if code != 0 || json.Unmarshal([]byte(stdout), &v) != nil || v.Status != api.StatusCommitted {
			return &usageError{"get: " + stdout + stderr}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if stdout, _, code := run(t, "txn", "get", out.TransactionID, "--node", node); code != 0 || !strings.Contains(stdout, "committed") || !strings.Contains(stdout, fp.Endpoints().Prepare) {
		t.Fatalf("get table: exit %d\n%s", code, stdout)
	}
	if _, _, code := run(t, "txn", "get", "no-such", "--node", node); code != exitNotFound {
		t.Fatalf("get unknown: exit %d, want %d", code, exitNotFound)
	}
	stdout, _, code = run(t, "txn", "list", "--node", node, "-o", "json", "--limit", "1", "--all")
	var l api.TransactionList
	if code != 0 || json.Unmarshal([]byte(stdout), &l) != nil || len(l.Transactions) != 2 {
		t.Fatalf("list --all: exit %d, %s", code, stdout)
	}
	if stdout, _, code := run(t, "txn", "list", "--node", node, "--key", "cli-1"); code != 0 || !strings.Contains(stdout, out.TransactionID) || strings.Count(stdout, "\n") != 2 {
		t.Fatalf("list --key table: exit %d\n%s", code, stdout)
	}
	if _, _, code := run(t, "txn", "list", "--node", node, "--status", "bogus"); code != exitUsage {
		t.Fatalf("list --status bogus: exit %d, want %d (400)", code, exitUsage)
	}
	if _, _, code := run(t, "txn", "list", "--bogus-flag"); code != exitUsage {
		t.Fatalf("unknown flag: exit %d, want %d", code, exitUsage)
	}
	if stdout, _, code := run(t, "txn", "stuck", "--node", node, "-o", "json"); code != 0 || !strings.Contains(stdout, `"transactions": []`) {
		t.Fatalf("stuck: exit %d, %s", code, stdout)
	}
	// Operator actions need the cluster token, and retry of a committed transaction is a 409.
	if _, _, code := run(t, "txn", "retry", out.TransactionID, "--node", node); code != exitError {
		t.Fatalf("retry with a client token: exit %d, want %d", code, exitError)
	}
	if _, stderr, code := run(t, "txn", "retry", out.TransactionID, "--node", node, "--token", clusterTok, "--note", "x"); code != exitConflict {
		t.Fatalf("retry of a committed transaction: exit %d, want %d: %s", code, exitConflict, stderr)
	}
	t.Setenv(envClusterToken, clusterTok)
	if _, _, code := run(t, "txn", "resolve", out.TransactionID, "--node", node); code != exitUsage {
		t.Fatalf("resolve without a note: exit %d, want %d", code, exitUsage)
	}
	if _, _, code := run(t, "txn", "resolve", "no-such", "--node", node, "--note", "by hand"); code != exitNotFound {
		t.Fatalf("resolve unknown: exit %d, want %d", code, exitNotFound)
	}
}

// --node's default is serve's --http-addr default, and its help names the image's port.
func TestNodeDefaultMatchesServe(t *testing.T) {
	t.Setenv("TXCOORD_NODE", "")
	serve := newServeCmd().Flags().Lookup("http-addr").DefValue
	for _, args := range [][]string{{"txn", "get"}, {"txn", "list"}, {"submit"}} {
		cmd, _, err := newRootCmd().Find(args)
		if err != nil {
			t.Fatal(err)
		}
		f := cmd.Flags().Lookup("node")
		if f.DefValue != "[http://"+serve+"]" || !strings.Contains(f.Usage, ":8080") {
			t.Errorf("%v --node default %s (serve listens on %s), usage %q", args, f.DefValue, serve, f.Usage)
		}
	}
}

// QA F22: submit to an address where nothing listens reaches no node, so no transaction can
// exist: exit 1 (unreachable), not 3 (outcome unknown), once --wait is over.
func TestSubmitToNoNodeIsUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	t.Setenv("TXCOORD_NODE", "")
	_, stderr, code := run(t, "submit", "--node", dead, "--wait", "1s", "http://127.0.0.1:9/prepare")
	if code != exitError || !strings.Contains(stderr, "no node was reached") {
		t.Fatalf("exit %d, stderr %q; want %d and a message saying nothing was started", code, stderr, exitError)
	}
}

// QA F10, F16: a usage error exits 64 in every command (README: "64 bad flags"), a
// missing positional argument as much as an unknown flag.
func TestUsageErrorsExit64Everywhere(t *testing.T) {
	t.Setenv("TXCOORD_NODE", "")
	for _, args := range [][]string{
		{"submit", "--node", "http://127.0.0.1:1"},
		{"txn", "get", "--node", "http://127.0.0.1:1"},
		{"cluster", "remove"},
		{"snapshot", "save"},
		{"serve", "--bogus"},
		{"peers", "remove"},
	} {
		if _, stderr, code := run(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d (%q), want %d", args, code, stderr, exitUsage)
		}
	}
}

package server_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/internal/tlsutil"
	"github.com/txcoord/txcoord/server"
	"github.com/txcoord/txcoord/server/servertest"
)

// TestMutualTLSCluster forms a 3-node cluster whose Raft traffic is mutual TLS and whose
// API is HTTPS, with auth on: a client POST to a follower is forwarded to the leader over
// HTTPS with the cluster token. A node whose certificate comes from another CA, and one
// without TLS, are refused by the Raft listener; one with a valid certificate is heard.
func TestMutualTLSCluster(t *testing.T) {
	dir := t.TempDir()
	ca, err := tlsutil.NewTestCA(dir, "cluster")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsutil.LoadCA(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	reloader := func(name string, ca *tlsutil.TestCA) *tlsutil.Reloader {
		cf, kf, err := ca.Issue(name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := tlsutil.NewReloader(cf, kf)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	certs := []*tlsutil.Reloader{reloader("n1", ca), reloader("n2", ca), reloader("n3", ca)}
	auth := authTune(t, nil)
	c := servertest.Start(t, servertest.Options{Tune: func(i int, cfg *server.Config) {
		auth(i, cfg)
		tr, err := cluster.NewTLSTransport(cfg.Cluster.RaftBind, "", tlsutil.MutualServer(certs[i], pool), tlsutil.MutualClient(certs[i], pool), nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Cluster.Transport = tr
		cfg.TLS = tlsutil.Server(certs[i])
		cfg.API.ForwardTLS = tlsutil.Client(pool, nil)
	}})
	leader := c.WaitLeader(15 * time.Second)
	f := c.Node(c.Follower())
	if !strings.HasPrefix(f.URL(), "https://") {
		t.Fatalf("URL %s", f.URL())
	}

	ps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ACK"}`)
	}))
	defer ps.Close()
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsutil.Client(pool, nil)}}
	req, _ := http.NewRequest(http.MethodPost, f.URL()+"/v1/transactions", strings.NewReader(`{"services":["`+ps.URL+`/prepare"]}`))
	req.Header.Set("Authorization", "Bearer "+clientToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"committed"`) {
		t.Fatalf("POST to follower over HTTPS: %d %s", resp.StatusCode, body)
	}
	// Plain HTTP to the HTTPS port gets nothing useful.
	if resp, err := http.Get("http" + strings.TrimPrefix(f.URL(), "https") + "/v1/cluster"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}

	// Raft RPCs from outsiders.
	target := raft.ServerAddress(c.Node(leader).Node.Status().Members[0].RaftAddr)
	for _, m := range c.Node(leader).Node.Status().Members {
		if m.ID == c.Node(leader).Node.ID() {
			target = raft.ServerAddress(m.RaftAddr)
		}
	}
	vote := func(tr raft.Transport) error {
		var out raft.RequestVoteResponse
		return tr.RequestVote("rogue", target, &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("rogue"), Addr: []byte(tr.LocalAddr())}, Term: 0,
		}, &out)
	}
	otherCA, err := tlsutil.NewTestCA(t.TempDir(), "evil")
	if err != nil {
		t.Fatal(err)
	}
	evil := reloader("rogue", otherCA)
	rogue, err := cluster.NewTLSTransport("127.0.0.1:0", "", tlsutil.MutualServer(evil, pool), tlsutil.MutualClient(evil, pool), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	if err := vote(rogue); err == nil {
		t.Fatal("a node with a certificate from another CA was heard")
	} else {
		t.Logf("other CA: %v", err)
	}
	plain, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, 2*time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := vote(plain); err == nil {
		t.Fatal("a node without TLS was heard")
	} else {
		t.Logf("no TLS: %v", err)
	}
	// Control: a client certificate from the right CA is heard (the vote is answered).
	good := reloader("n4", ca)
	friend, err := cluster.NewTLSTransport("127.0.0.1:0", "", tlsutil.MutualServer(good, pool), tlsutil.MutualClient(good, pool), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer friend.Close()
	if err := vote(friend); err != nil {
		t.Fatalf("a node with a valid certificate was refused: %v", err)
	}
	// A raw TLS client without a certificate cannot complete a request either.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", string(target), tlsutil.Client(pool, nil))
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = conn.Write([]byte{0})
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("a TLS client without a certificate got an answer")
		}
		conn.Close()
	}
	// Discovery shares the port and sits inside the same TLS: a plain probe (which could
	// otherwise read the view or ask to remove a voter) gets no answer.
	if info, err := cluster.Probe(context.Background(), string(target), 2*time.Second); err == nil {
		t.Fatalf("a discovery probe without TLS was answered: %+v", info)
	}
	_ = httpapi.MinTokenLen
}

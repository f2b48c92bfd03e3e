package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/txcoord/txcoord/internal/tlsutil"
	"github.com/txcoord/txcoord/server"
)

func TestSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokFile, []byte("file-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.NewTestCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("n1")
	if err != nil {
		t.Fatal(err)
	}
	lg := hclog.NewNullLogger()
	cfg := func() *server.Config {
		return &server.Config{HTTPBind: "127.0.0.1:8081"}
	}

	// Environment tokens; auth and policy land in the config.
	t.Setenv(envAPITokens, "env-token-0123456789abcdef, env-token-2-0123456789abcdef")
	t.Setenv(envClusterToken, "cluster-token-0123456789abcdef")
	c := cfg()
	s := &securityFlags{partAllow: []string{"10.0.0.0/8"}}
	if err := s.apply(c, lg); err != nil {
		t.Fatal(err)
	}
	if c.API.Auth.API.Len() != 2 || c.API.Auth.Cluster.First() != "cluster-token-0123456789abcdef" {
		t.Fatalf("tokens from the environment not applied")
	}
	if c.API.URLPolicy == nil || c.Participant.Policy != c.API.URLPolicy || c.API.URLPolicy.CheckURL("http://127.0.0.1:8081/prepare") == nil {
		t.Fatal("policy not applied (or own address allowed)")
	}
	// A file and the environment at once is ambiguous.
	if err := (&securityFlags{apiTokenFile: tokFile}).apply(cfg(), lg); err == nil || !strings.Contains(err.Error(), "use one") {
		t.Fatalf("file + env: %v", err)
	}
	t.Setenv(envAPITokens, "")
	t.Setenv(envClusterToken, "short")
	if err := (&securityFlags{}).apply(cfg(), lg); err == nil || strings.Contains(err.Error(), "short") {
		t.Fatalf("short env token: %v (must be refused without being printed)", err)
	}
	t.Setenv(envClusterToken, "")
	c = cfg()
	if err := (&securityFlags{apiTokenFile: tokFile}).apply(c, lg); err != nil || !c.API.Auth.API.Match("file-token-0123456789abcdef") {
		t.Fatalf("token file: %v", err)
	}
	// TLS combinations.
	for _, bad := range []securityFlags{{tlsCert: cert}, {tlsCA: ca.CertFile}, {tlsCert: cert, tlsKey: cert}} {
		if err := bad.apply(cfg(), lg); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	c = cfg()
	s = &securityFlags{tlsCert: cert, tlsKey: key, tlsCA: ca.CertFile}
	if err := s.apply(c, lg); err != nil {
		t.Fatal(err)
	}
	if c.TLS == nil || c.API.ForwardTLS == nil || s.raftTLS == nil {
		t.Fatal("TLS not configured")
	}
	tr, err := s.newTransport("127.0.0.1:0", "", lg)
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	// Rate limit and negative values.
	if err := (&securityFlags{rateLimit: -1}).apply(cfg(), lg); err == nil {
		t.Error("negative rate accepted")
	}
	// CLI credentials.
	t.Setenv(envClusterToken, "cl-0123456789abcdefgh")
	t.Setenv(envToken, "tok-0123456789abcdefgh")
	h := http.Header{}
	setCLIAuth(h, true)
	if h.Get("Authorization") != "Bearer cl-0123456789abcdefgh" {
		t.Errorf("cluster CLI header %q", h.Get("Authorization"))
	}
	setCLIAuth(h, false)
	if h.Get("Authorization") != "Bearer tok-0123456789abcdefgh" {
		t.Errorf("client CLI header %q", h.Get("Authorization"))
	}
}

package call

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/participant/protocol"
)

func TestPolicyCheckURL(t *testing.T) {
	self := &Policy{Self: []string{"0.0.0.0:8081", "10.1.2.3:7001"}}
	allow := &Policy{Allow: []string{"pay.internal", ".svc.cluster.local", "*.example.com", "10.0.0.0/8", "192.0.2.7"}}
	cidrOnly := &Policy{Allow: []string{"10.0.0.0/8"}}
	noLoop := &Policy{DenyLoopback: true}
	cases := []struct {
		p    *Policy
		url  string
		want string // "" = allowed, else a substring of the refusal
	}{
		{nil, "http://127.0.0.1:9001/prepare", ""},
		{nil, "http://localhost:9001/prepare", ""},
		{nil, "http://pay.example/prepare", ""},
		{nil, "http://169.254.169.254/latest/meta-data/prepare", "metadata"},
		{nil, "http://[fd00:ec2::254]/prepare", "metadata"},
		{nil, "http://metadata.google.internal/computeMetadata/v1/prepare", "metadata"},
		{nil, "http://METADATA.google.internal./prepare", "metadata"},
		{nil, "http://169.254.10.20:80/prepare", "link-local"},
		{nil, "http://[fe80::1]:80/prepare", "link-local"},
		{nil, "http://[fe80::1%25eth0]:80/prepare", "link-local"}, // zoned: regression
		{nil, "http://[fd00:ec2::254%25eth0]/prepare", "metadata"},
		{nil, "http://[::ffff:169.254.169.254]/prepare", "metadata"},
		{nil, "http://0.0.0.0:9001/prepare", "unspecified"},
		{nil, "http://[::]:9001/prepare", "unspecified"},
		{nil, "http://239.1.1.1/prepare", "multicast"},
		{noLoop, "http://127.0.0.1:9001/prepare", "loopback"},
		{noLoop, "http://127.9.9.9:9001/prepare", "loopback"},
		{noLoop, "http://[::1]:9001/prepare", "loopback"},
		{noLoop, "http://localhost:9001/prepare", "loopback"},
		{noLoop, "http://pay.example/prepare", ""},
		{self, "http://127.0.0.1:8081/prepare", "own address"},
		{self, "http://localhost:8081/prepare", "own address"},
		{self, "http://10.1.2.3:7001/prepare", "own address"},
		{self, "http://127.0.0.1:8082/prepare", ""},
		{self, "http://10.1.2.4:7001/prepare", ""},
		{allow, "http://pay.internal/prepare", ""},
		{allow, "http://a.b.svc.cluster.local:8080/prepare", ""},
		{allow, "http://svc.cluster.local/prepare", "allowlist"},
		{allow, "http://flight.example.com/prepare", ""},
		{allow, "http://example.com.evil.net/prepare", "allowlist"},
		{allow, "http://pay.internal.evil.net/prepare", "allowlist"},
		{allow, "http://10.3.4.5/prepare", ""},
		{allow, "http://192.0.2.7/prepare", ""},
		{allow, "http://192.0.2.8/prepare", "allowlist"},
		{allow, "http://other.host/prepare", "allowlist"},
		{allow, "http://169.254.169.254/prepare", "metadata"},
		{cidrOnly, "http://10.0.0.1/prepare", ""},
		{cidrOnly, "http://some.name/prepare", ""}, // checked when resolved
		{cidrOnly, "http://11.0.0.1/prepare", "allowlist"},
	}
	for _, c := range cases {
		err := c.p.CheckURL(c.url)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.url, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrForbidden)):
			t.Errorf("%s: err = %v, want a refusal naming %q", c.url, err, c.want)
		}
	}
}

func TestPolicyCheckDial(t *testing.T) {
	cidrOnly := &Policy{Allow: []string{"10.0.0.0/8"}}
	for addr, ok := range map[string]bool{"10.1.1.1:80": true, "11.1.1.1:80": false, "169.254.169.254:80": false} {
		if err := cidrOnly.CheckDial(addr); (err == nil) != ok {
			t.Errorf("CheckDial(%s) = %v", addr, err)
		}
	}
	if err := (&Policy{}).CheckDial("[fd00:ec2::254]:80"); err == nil {
		t.Error("metadata IPv6 dialable")
	}
	if err := (&Policy{}).CheckDial("[fe80::1%eth0]:80"); err == nil {
		t.Error("zoned link-local dialable")
	}
	if err := (&Policy{Allow: []string{"10.0.0.0/33"}}).CheckURL("http://a/prepare"); err == nil {
		t.Error("bad CIDR accepted")
	}
}

// The client checks the address it actually dials: a name that passes (or bypasses) the
// submission check but resolves to a forbidden address is refused before connecting, the
// defence against DNS rebinding.
func TestClientRefusesForbiddenResolvedAddress(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		_, _ = w.Write([]byte(`{"status":"ACK"}`))
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	for _, p := range []*Policy{{DenyLoopback: true}, {Self: []string{"0.0.0.0:" + port}}, {Allow: []string{"10.0.0.0/8"}}} {
		c := NewClient(ClientOptions{Policy: p})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Call(ctx, "http://localhost:"+port+"/prepare", protocol.PhasePrepare, protocol.Request{TransactionID: "t"})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Errorf("policy %+v: err = %v, want forbidden", p.Allow, err)
		}
	}
	if hits != 0 {
		t.Fatalf("the participant was reached %d times", hits)
	}
	// Loopback is allowed by default.
	c := NewClient(ClientOptions{Policy: &Policy{}})
	if _, err := c.Call(context.Background(), srv.URL+"/prepare", protocol.PhasePrepare, protocol.Request{TransactionID: "t"}); err != nil {
		t.Fatalf("default policy refused loopback: %v", err)
	}
}

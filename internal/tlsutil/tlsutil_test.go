package tlsutil

import (
	"crypto/tls"
	"os"
	"testing"
	"time"
)

// A reissued certificate is served without a restart; a broken pair keeps the old one.
func TestReloaderPicksUpNewCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewTestCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	cf, kf, err := ca.Issue("node")
	if err != nil {
		t.Fatal(err)
	}
	var errs int
	r, err := NewReloader(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	r.OnError = func(error) { errs++ }
	first := r.Current().Certificate[0]
	time.Sleep(1100 * time.Millisecond)
	if _, _, err := ca.Issue("node"); err != nil {
		t.Fatal(err)
	}
	c, _ := r.GetCertificate(&tls.ClientHelloInfo{})
	if string(c.Certificate[0]) == string(first) {
		t.Fatal("the reissued certificate was not picked up")
	}
	second := c.Certificate[0]
	time.Sleep(1100 * time.Millisecond)
	if err := os.WriteFile(kf, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ = r.GetClientCertificate(&tls.CertificateRequestInfo{})
	if string(c.Certificate[0]) != string(second) || errs != 1 {
		t.Fatalf("broken pair: cert changed or error not reported (%d)", errs)
	}
	if _, err := NewReloader(cf, ""); err == nil {
		t.Fatal("missing key accepted")
	}
	if _, err := LoadCA(kf); err == nil {
		t.Fatal("a non-certificate accepted as CA")
	}
}

package call

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzCheckURL: the policy never panics, and whatever it accepts is not a link-local or
// metadata IP literal (in any spelling url.Parse and netip accept).
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"http://169.254.169.254/prepare", "http://[::ffff:a9fe:a9fe]/prepare",
		"http://[fe80::1%25eth0]/prepare", "http://metadata.google.internal./prepare", "http://127.0.0.1:8081/prepare",
		"http://a.example.com/prepare", "http://[fd00:ec2::254]:80/prepare", "http://0/prepare"} {
		f.Add(s)
	}
	p := &Policy{Self: []string{"127.0.0.1:8081"}}
	f.Fuzz(func(t *testing.T, raw string) {
		if p.CheckURL(raw) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		if metadataHosts[host] {
			t.Fatalf("accepted metadata host %q", raw)
		}
		if a, err := netip.ParseAddr(host); err == nil {
			a = a.Unmap().WithZone("")
			if a.IsLinkLocalUnicast() || linkLocal4.Contains(a) || linkLocal6.Contains(a) || a == ec2Meta6 || a.IsUnspecified() {
				t.Fatalf("accepted %q (%s)", raw, a)
			}
		}
	})
}

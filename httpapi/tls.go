package httpapi

import (
	"crypto/tls"
	"net/http"
	"strings"
)

// useTLS makes the forwarder call other nodes over HTTPS, verifying them with cfg (the
// cluster CA, issue 8): an "http://" leader address is rewritten to "https://".
func (f *forwarder) useTLS(cfg *tls.Config) {
	if t, ok := f.hc.Transport.(*http.Transport); ok {
		t.TLSClientConfig = cfg
	}
	f.https = true
}

// scheme rewrites url for the forwarder's scheme.
func (f *forwarder) scheme(url string) string {
	if f.https && strings.HasPrefix(url, "http://") {
		return "https://" + strings.TrimPrefix(url, "http://")
	}
	return url
}

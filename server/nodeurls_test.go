package server

import (
	"slices"
	"testing"
)

func TestNodeURLs(t *testing.T) {
	m := map[string]string{"n2": "10.0.0.2:8080", "n1": "http://10.0.0.1:8080/", "n3": "https://h3:8443"}
	if got := nodeURLs(m, false); !slices.Equal(got, []string{"http://10.0.0.1:8080", "http://10.0.0.2:8080", "https://h3:8443"}) {
		t.Errorf("plain: %q", got)
	}
	if got := nodeURLs(m, true); !slices.Equal(got, []string{"https://10.0.0.1:8080", "https://10.0.0.2:8080", "https://h3:8443"}) {
		t.Errorf("TLS: %q", got)
	}
}

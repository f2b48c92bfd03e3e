package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/txcoord/txcoord/cluster"
)

// FindLeader asks the nodes at urls for the leader's API base URL (GET /v1/cluster).
func FindLeader(ctx context.Context, hc *http.Client, urls []string) (string, error) {
	var lastErr error
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(u, "/")+"/v1/cluster", nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		var st cluster.Status
		if err := json.Unmarshal(raw, &st); err != nil {
			lastErr = fmt.Errorf("%s/v1/cluster: %v", u, err)
			continue
		}
		if st.Role == "leader" {
			return strings.TrimRight(u, "/"), nil
		}
		if st.LeaderHTTP != "" {
			return baseURL(st.LeaderHTTP), nil
		}
		lastErr = fmt.Errorf("%s knows no leader", u)
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no node given")
	}
	return "", lastErr
}

// baseURL turns "host:port" or a URL into "http://host:port" without a trailing slash.
func baseURL(s string) string {
	s = strings.TrimRight(s, "/")
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	return s
}

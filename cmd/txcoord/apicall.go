package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/txcoord/txcoord/api"
)

// apiCall sends one request to a node's API and decodes a 2xx JSON answer into out; any
// other answer becomes an error wrapping the API's {"error","detail"} as an *api.Error.
func apiCall(ctx context.Context, method, base, path string, in, out any) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, body)
	if err != nil {
		return fmt.Errorf("--node %q: %w", base, err)
	}
	req.Header.Set("Content-Type", "application/json")
	setCLIAuth(req.Header, true)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		// The API's {"error","detail"} as an *api.Error, so that failed maps it to the
		// documented exit status (a 400 is 64).
		e := &api.Error{HTTPStatus: resp.StatusCode}
		if json.Unmarshal(raw, e) == nil && e.Code != "" {
			return fmt.Errorf("%s %s: HTTP %d: %w", method, path, resp.StatusCode, e)
		}
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, path, err)
		}
	}
	return nil
}

func baseURL(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return addr
	}
	return "http://" + addr
}

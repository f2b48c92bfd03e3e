package call

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/participant/protocol"
)

// A participant that answers 200 with more than MaxReplyBytes gets a reply error; the
// client never reads past the limit.
func TestReplySizeIsBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"status":"ACK","pad":"` + strings.Repeat("x", 4*protocol.MaxReplyBytes) + `"}`))
	}))
	defer srv.Close()
	_, err := NewClient(ClientOptions{}).Call(context.Background(), srv.URL+"/prepare", protocol.PhasePrepare, protocol.Request{TransactionID: "t"})
	var ce *CallError
	if !errors.As(err, &ce) || ce.Kind != KindReply || !strings.Contains(ce.Msg, "body over") {
		t.Fatalf("err = %v, want a reply error naming the size limit", err)
	}
}

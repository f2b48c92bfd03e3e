package demo_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/internal/demo"
	"github.com/txcoord/txcoord/participant"
)

// The request log names the caller: its address and the coordinator node it says it is.
func TestRequestLogRecordsSender(t *testing.T) {
	s := start(t, demo.Config{Kind: demo.KindHotel})
	c := call.NewClient(call.ClientOptions{Header: http.Header{demo.NodeHeader: {"coord2"}}})
	req := participant.Request{TransactionID: "t1", Deadline: "2099-01-01T00:00:00.000Z"}
	if _, err := c.Call(context.Background(), s.prepareURL(), participant.PhasePrepare, req); err != nil {
		t.Fatal(err)
	}
	must(t, s, participant.PhaseCommit, "t1", participant.ACK, "")
	log := s.Requests()
	if len(log) != 2 {
		t.Fatalf("log = %+v", log)
	}
	if log[0].Node != "coord2" || !strings.HasPrefix(log[0].From, "127.0.0.1:") {
		t.Fatalf("prepare logged from %q node %q", log[0].From, log[0].Node)
	}
	if log[1].Node != "" || log[1].From == "" {
		t.Fatalf("commit logged from %q node %q", log[1].From, log[1].Node)
	}
}

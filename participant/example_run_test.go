package participant_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/txcoord/txcoord/participant"
	"github.com/txcoord/txcoord/participant/protocol"
)

// A participant whose coordinator went silent after the Prepare finds the outcome by
// itself: Run asks a node of the Prepare's inquiry list once the deadline plus the grace
// period has passed, and applies the answer through the commit callback.
func ExampleHandler_Run() {
	// Stands in for a node of the coordinator cluster: it knows the transaction committed.
	cluster := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("asked:", r.Method, r.URL.Path)
		fmt.Fprint(w, `{"transactionId":"t1","outcome":"committed"}`)
	}))
	defer cluster.Close()

	committed := make(chan struct{})
	h := participant.NewHandler(participant.Callbacks{
		Commit: func(context.Context, string) error { close(committed); return nil },
	}, participant.NewMemStore(), participant.WithInquiryGrace(10*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()

	h.Do(ctx, participant.PhasePrepare, participant.Request{TransactionID: "t1",
		Deadline: protocol.FormatDeadline(time.Now().Add(50 * time.Millisecond)),
		Inquiry:  []string{cluster.URL}})
	<-committed // no Commit call came: the inquiry's answer ran the callback
	fmt.Println("committed")
	cancel()
	fmt.Println(<-done)
	// Output:
	// asked: GET /v1/transactions/t1/outcome
	// committed
	// context canceled
}

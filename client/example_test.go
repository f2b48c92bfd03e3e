package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/client"
)

// Submit a transaction, look it up and list the failed ones. The node here is a stand-in
// that answers as a txcoord node would; point New at your nodes (any of them: followers
// forward to the leader), e.g. client.New([]string{"http://10.0.0.1:8080",
// "http://10.0.0.2:8080"}, client.Options{Token: os.Getenv("TXCOORD_TOKEN")}).
func Example() {
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/transactions":
			fmt.Fprint(w, `{"transactionId":"01a2","status":"committed","errors":[]}`)
		case r.URL.Path == "/v1/transactions/01a2":
			fmt.Fprint(w, `{"transactionId":"01a2","status":"committed","participants":[],"errors":[]}`)
		case r.URL.Path == "/v1/transactions":
			fmt.Fprint(w, `{"transactions":[],"next":""}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"not_found","detail":"no such route"}`)
		}
	}))
	defer node.Close()

	c, err := client.New([]string{node.URL}, client.Options{Token: "my-client-token"})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	out, err := c.Submit(ctx, client.Transaction{
		Services: client.Services("http://hotel:9001/prepare", "http://flight:9002/prepare"),
		Timeout:  time.Second,
	})
	var inc *client.IncompleteError
	switch {
	case errors.As(err, &inc):
		fmt.Println("unknown yet; resubmit with key", inc.IdempotencyKey)
		return
	case err != nil:
		fmt.Println("refused:", err)
		return
	}
	fmt.Println(out.TransactionID, out.Status)

	v, err := c.Get(ctx, out.TransactionID, client.ReadOptions{})
	if err == nil {
		fmt.Println("looked up:", v.Status)
	}
	for t, err := range c.List(ctx, client.ListOptions{Status: api.StatusFailed}) {
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Println("failed:", t.TransactionID)
	}
	if _, err := c.Get(ctx, "nope", client.ReadOptions{}); errors.Is(err, client.ErrNotFound) {
		fmt.Println("nope: not found")
	}
	// Output:
	// 01a2 committed
	// looked up: committed
	// nope: not found
}

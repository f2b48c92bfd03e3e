package participant_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/txcoord/txcoord/participant"
)

// A service that sells seats mounts the handler at /tx/{phase}. Its inventory lives in the
// same bbolt file as the handler's records, and every callback writes through
// participant.BoltTx(ctx), so a seat changes hands exactly when the record says so, even
// across crashes.
func ExampleNewHandler() {
	dir, _ := os.MkdirTemp("", "participant-example")
	defer os.RemoveAll(dir)
	store, err := participant.OpenBoltStore(filepath.Join(dir, "seats.db"))
	if err != nil {
		panic(err)
	}
	defer store.Close()

	// Two seats to start with; held seats are keyed by transaction id.
	free := 2
	h := participant.NewHandler(participant.Callbacks{
		Prepare: func(ctx context.Context, txID string, deadline time.Time) error {
			if free == 0 {
				return errors.New("sold out")
			}
			free--
			b, err := participant.BoltTx(ctx).CreateBucketIfNotExists([]byte("held"))
			if err != nil {
				return err
			}
			return b.Put([]byte(txID), []byte("1"))
		},
		Commit: func(ctx context.Context, txID string) error {
			return participant.BoltTx(ctx).Bucket([]byte("held")).Delete([]byte(txID))
		},
		Rollback: func(ctx context.Context, txID string) error {
			free++
			return participant.BoltTx(ctx).Bucket([]byte("held")).Delete([]byte(txID))
		},
	}, store)

	mux := http.NewServeMux()
	mux.Handle("POST /tx/{phase}", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	send := func(phase participant.Phase, txID string) {
		body, _ := json.Marshal(participant.Request{
			TransactionID: txID,
			Deadline:      participant.FormatDeadline(time.Now().Add(time.Minute)),
		})
		resp, err := http.Post(srv.URL+"/tx/"+string(phase), "application/json", strings.NewReader(string(body)))
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		var rep participant.Reply
		_ = json.NewDecoder(resp.Body).Decode(&rep)
		fmt.Println(phase, txID, "->", rep.Status, rep.Reason)
	}
	send(participant.PhasePrepare, "t1")
	send(participant.PhasePrepare, "t1") // a duplicate: same vote, no second seat
	send(participant.PhaseCommit, "t1")
	send(participant.PhaseCommit, "t1")   // acknowledged again, nothing sold twice
	send(participant.PhaseRollback, "t2") // never prepared: acknowledged, remembered
	send(participant.PhasePrepare, "t2")  // arrived too late: refused
	send(participant.PhaseCommit, "t3")   // never prepared: refused
	fmt.Println("free seats:", free)
	// Output:
	// prepare t1 -> ACK
	// prepare t1 -> ACK
	// commit t1 -> ACK
	// commit t1 -> ACK
	// rollback t2 -> ACK
	// prepare t2 -> NACK already rolled back
	// commit t3 -> NACK unknown transaction: never prepared here
	// free seats: 1
}

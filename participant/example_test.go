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
	bolt "go.etcd.io/bbolt"
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

	// Free seats are a counter in bucket "seats"; the seats held are keyed by transaction id
	// in bucket "held". Both change only inside the store's transaction.
	err = store.DB().Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucketIfNotExists([]byte("seats"))
		_, _ = tx.CreateBucketIfNotExists([]byte("held"))
		return b.Put([]byte("free"), []byte{2})
	})
	if err != nil {
		panic(err)
	}
	move := func(ctx context.Context, txID string, delta int, hold bool) error {
		tx := participant.BoltTx(ctx)
		seats, held := tx.Bucket([]byte("seats")), tx.Bucket([]byte("held"))
		free := int(seats.Get([]byte("free"))[0]) + delta
		if free < 0 {
			return errors.New("sold out") // a NACK vote; nothing was written
		}
		if hold {
			_ = held.Put([]byte(txID), []byte{1})
		} else {
			_ = held.Delete([]byte(txID))
		}
		return seats.Put([]byte("free"), []byte{byte(free)})
	}
	h := participant.NewHandler(participant.Callbacks{
		Prepare: func(ctx context.Context, txID string, deadline time.Time) error {
			return move(ctx, txID, -1, true)
		},
		Commit: func(ctx context.Context, txID string) error {
			return move(ctx, txID, 0, false) // the held seat is sold
		},
		Rollback: func(ctx context.Context, txID string) error {
			return move(ctx, txID, +1, false)
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
		fmt.Println(strings.TrimSpace(fmt.Sprint(phase, " ", txID, " -> ", rep.Status, " ", rep.Reason)))
	}
	send(participant.PhasePrepare, "t1")
	send(participant.PhasePrepare, "t1") // a duplicate: same vote, no second seat
	send(participant.PhaseCommit, "t1")
	send(participant.PhaseCommit, "t1")   // acknowledged again, nothing sold twice
	send(participant.PhaseRollback, "t2") // never prepared: acknowledged, remembered
	send(participant.PhasePrepare, "t2")  // arrived too late: refused
	send(participant.PhaseCommit, "t3")   // never prepared: refused
	_ = store.DB().View(func(tx *bolt.Tx) error {
		fmt.Println("free seats:", tx.Bucket([]byte("seats")).Get([]byte("free"))[0])
		return nil
	})
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

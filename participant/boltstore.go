package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// RecordsBucket is the bbolt bucket in which BoltStore keeps records: key = transaction id,
// value = the Record as JSON.
const RecordsBucket = "txcoord.participant.records"

// BoltStore is the default Store: records in a bbolt database, each Put one fsynced bbolt
// write transaction. It is atomic: during Put, effect's context carries the write
// transaction (BoltTx), so a service that keeps its own data in the same database makes its
// callback effects and the record commit together or not at all.
//
// Note that bbolt has one writer at a time: a prepare callback running inside Put holds every
// other write of the database. Keep callbacks short; do slow work (calls to other systems)
// before the handler, or in a store of your own.
type BoltStore struct {
	db  *bolt.DB
	own bool // Close closes db
}

// OpenBoltStore opens (creating if needed, mode 0600) the bbolt file at path and returns a
// store that owns it: Close closes the file. It waits at most 5 s for another process's lock
// on the file and fails after that.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("participant: open %s: %w", path, err)
	}
	s, err := NewBoltStore(db)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.own = true
	return s, nil
}

// NewBoltStore keeps records in db, an open database the caller owns (and may use for its own
// buckets); it creates RecordsBucket if needed. Close does not close db.
func NewBoltStore(db *bolt.DB) (*BoltStore, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(RecordsBucket))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("participant: create bucket: %w", err)
	}
	return &BoltStore{db: db}, nil
}

// DB returns the underlying database.
func (s *BoltStore) DB() *bolt.DB { return s.db }

// Close closes the database if OpenBoltStore opened it; otherwise it does nothing.
func (s *BoltStore) Close() error {
	if !s.own {
		return nil
	}
	return s.db.Close()
}

type boltTxKey struct{}

// BoltTx returns the bbolt write transaction that BoltStore.Put is running, from the context
// it passes to effect (that is, the ctx of a Callbacks function called through a BoltStore),
// or nil outside such a call. Write your effects through it and do not commit or roll it back:
// they then commit atomically with the transaction's record. Returning an error from the
// callback discards them.
func BoltTx(ctx context.Context) *bolt.Tx {
	tx, _ := ctx.Value(boltTxKey{}).(*bolt.Tx)
	return tx
}

// Get implements Store.
func (s *BoltStore) Get(_ context.Context, txID string) (rec Record, found bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		rec, found, err = getRecord(tx, txID)
		return err
	})
	return rec, found, err
}

// Put implements Store: effect and the write of rec run in one bbolt write transaction.
// A panic in effect rolls the transaction back and is re-raised.
func (s *BoltStore) Put(ctx context.Context, rec Record, effect func(ctx context.Context) error) error {
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if effect != nil {
			if err := effect(context.WithValue(ctx, boltTxKey{}, tx)); err != nil {
				return err
			}
		}
		b := tx.Bucket([]byte(RecordsBucket))
		if b == nil {
			return errors.New("participant: records bucket missing")
		}
		return b.Put([]byte(rec.TransactionID), val)
	})
}

// ForEach calls fn for every record in key order, inside tx if tx is not nil (so a service can
// read its records and its own data in one consistent snapshot) or else in a read
// transaction of its own. An error from fn stops the walk and is returned.
func (s *BoltStore) ForEach(tx *bolt.Tx, fn func(Record) error) error {
	if tx == nil {
		return s.db.View(func(tx *bolt.Tx) error { return s.ForEach(tx, fn) })
	}
	b := tx.Bucket([]byte(RecordsBucket))
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		var rec Record
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("participant: record %q: %w", k, err)
		}
		return fn(rec)
	})
}

// Prune deletes final records (committed or rolled back) last written before cutoff and
// returns how many it deleted. Only prune records the coordinator can no longer send: a pruned
// tombstone no longer refuses a late Prepare, so keep records well past the longest prepare
// deadline plus the coordinator's retry horizon.
func (s *BoltStore) Prune(cutoff time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(RecordsBucket))
		if b == nil {
			return nil
		}
		var dead [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var rec Record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("participant: record %q: %w", k, err)
			}
			if rec.Final() && rec.Updated.Before(cutoff) {
				dead = append(dead, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range dead {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(dead)
		return nil
	})
	return n, err
}

func getRecord(tx *bolt.Tx, txID string) (Record, bool, error) {
	b := tx.Bucket([]byte(RecordsBucket))
	if b == nil {
		return Record{}, false, nil
	}
	v := b.Get([]byte(txID))
	if v == nil {
		return Record{}, false, nil
	}
	var rec Record
	if err := json.Unmarshal(v, &rec); err != nil {
		return Record{}, false, fmt.Errorf("participant: record %q: %w", txID, err)
	}
	return rec, true, nil
}

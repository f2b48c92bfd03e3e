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
// value = the Record as JSON with a version field "v" (RecordVersion).
const RecordsBucket = "txcoord.participant.records"

// RecordVersion is the version of the stored record encoding that BoltStore writes, in the
// value's "v" field. Version 1 (written before issue 17) has no "v" field; version 2 adds
// "inquiry". BoltStore reads every version up to this one, and refuses a record of a later
// version (written by a newer build) rather than drop what it does not know.
const RecordVersion = 2

// storedRecord is the stored form of a Record: the Record's fields and the version.
type storedRecord struct {
	V int `json:"v,omitempty"`
	Record
}

func encodeRecord(rec Record) ([]byte, error) {
	return json.Marshal(storedRecord{V: RecordVersion, Record: rec})
}

func decodeRecord(k, v []byte) (Record, error) {
	var sr storedRecord
	if err := json.Unmarshal(v, &sr); err != nil {
		return Record{}, fmt.Errorf("participant: record %q: %w", k, err)
	}
	if sr.V > RecordVersion {
		return Record{}, fmt.Errorf("participant: record %q has version %d; this build reads up to %d (downgrade after an upgrade?)", k, sr.V, RecordVersion)
	}
	// Version 1 is version 2 without "inquiry": the same fields decode the same way.
	return sr.Record, nil
}

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
	val, err := encodeRecord(rec)
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
		rec, err := decodeRecord(k, v)
		if err != nil {
			return err
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
			rec, err := decodeRecord(k, v)
			if err != nil {
				return err
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

// Prepared implements PreparedLister: every record in StatePrepared, in key order. It reads
// the whole bucket; Handler.Run calls it once when it starts.
func (s *BoltStore) Prepared(context.Context) ([]Record, error) {
	var out []Record
	err := s.ForEach(nil, func(r Record) error {
		if r.State == StatePrepared {
			out = append(out, r)
		}
		return nil
	})
	return out, err
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
	rec, err := decodeRecord([]byte(txID), v)
	if err != nil {
		return Record{}, false, err
	}
	return rec, true, nil
}

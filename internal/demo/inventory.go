package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/txcoord/txcoord/participant"
	bolt "go.etcd.io/bbolt"
)

// Bucket names of the demo's own data, beside participant.RecordsBucket in the same file.
const (
	poolsBucket = "demo.pools" // pool name -> Inventory JSON
	holdsBucket = "demo.holds" // transaction id -> Hold JSON
	metaBucket  = "demo.meta"  // "kind", "unit" -> JSON
)

// Inventory is one pool of a service, in units: seats of a flight, rooms of a hotel, or the
// cents of one payment account. Capacity = Free + Held + Sold at all times.
type Inventory struct {
	// Capacity is the pool's size: seats, rooms, or the account's starting balance.
	Capacity int64 `json:"capacity"`
	// Free is what can still be reserved (for an account: its available balance).
	Free int64 `json:"free"`
	// Held is reserved by prepared transactions, neither sold nor released yet.
	Held int64 `json:"held"`
	// Sold is taken by committed transactions (for an account: charged).
	Sold int64 `json:"sold"`
}

// Hold is what one prepared transaction holds: Units of pool Pool.
type Hold struct {
	Pool  string `json:"pool"`
	Units int64  `json:"units"`
}

// pools returns the pool names of a kind and the NACK reason when a pool runs out.
func pools(kind string, accounts int) (names []string, outOf string) {
	switch kind {
	case KindFlight:
		return []string{"seats"}, "no seats left"
	case KindHotel:
		return []string{"rooms"}, "no rooms left"
	default:
		for i := range accounts {
			names = append(names, fmt.Sprintf("acct-%d", i))
		}
		return names, "insufficient funds"
	}
}

// poolFor picks the pool a transaction draws from: the only one, or for payment an account
// chosen by a hash of the transaction id (so every participant call agrees without state).
func (s *Service) poolFor(txID string) string {
	if len(s.pools) == 1 {
		return s.pools[0]
	}
	h := fnv.New32a()
	h.Write([]byte(txID))
	return s.pools[h.Sum32()%uint32(len(s.pools))]
}

// initDB creates the buckets and, on first use, the pools; on later opens it checks that
// the file belongs to the same kind and keeps its stored unit and capacities.
func (s *Service) initDB() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{poolsBucket, holdsBucket, metaBucket} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		meta := tx.Bucket([]byte(metaBucket))
		if v := meta.Get([]byte("kind")); v != nil {
			if string(v) != s.cfg.Kind {
				return fmt.Errorf("demo: %s holds a %q service, not %q", s.db.Path(), v, s.cfg.Kind)
			}
			return json.Unmarshal(meta.Get([]byte("unit")), &s.unit)
		}
		s.unit = s.cfg.Unit
		unit, _ := json.Marshal(s.unit)
		if err := meta.Put([]byte("kind"), []byte(s.cfg.Kind)); err != nil {
			return err
		}
		if err := meta.Put([]byte("unit"), unit); err != nil {
			return err
		}
		for _, name := range s.pools {
			if err := putJSON(tx, poolsBucket, name, Inventory{Capacity: s.cfg.Capacity, Free: s.cfg.Capacity}); err != nil {
				return err
			}
		}
		return nil
	})
}

var errInjectedNACK = errors.New("injected NACK")

// Order is what a demo service reads from a transaction's payload (participant.Payload):
// {"seats": 2} for a flight, {"nights": 3} for a hotel, {"amount": 4250} (cents) for a
// payment; other fields (a flight number, a guest name) are kept with the vote but not
// read. Without a payload the order is one Unit.
type Order struct {
	Seats  int64 `json:"seats,omitempty"`
	Nights int64 `json:"nights,omitempty"`
	Amount int64 `json:"amount,omitempty"`
}

// orderField is the payload field a kind reads.
func orderField(kind string) string {
	switch kind {
	case KindFlight:
		return "seats"
	case KindHotel:
		return "nights"
	default:
		return "amount"
	}
}

// unitsOf returns the units a payload orders from a service of kind (unit when there is
// no payload), or an error that the prepare callback turns into a NACK.
func unitsOf(kind string, unit int64, payload json.RawMessage) (int64, error) {
	if len(payload) == 0 {
		return unit, nil
	}
	var o Order
	if err := json.Unmarshal(payload, &o); err != nil {
		return 0, fmt.Errorf("bad order: payload is not an object with %q: %v", orderField(kind), err)
	}
	n := map[string]int64{KindFlight: o.Seats, KindHotel: o.Nights, KindPayment: o.Amount}[kind]
	if n <= 0 {
		return 0, fmt.Errorf("bad order: payload needs a positive %q", orderField(kind))
	}
	return n, nil
}

// prepare reserves what the order in the payload asks (one Config.Unit without a payload)
// of the transaction's pool: free -> held.
func (s *Service) prepare(ctx context.Context, txID string, _ time.Time) error {
	if s.roll(func(f Faults) float64 { return f.NackRate }) {
		return errInjectedNACK
	}
	units, err := unitsOf(s.cfg.Kind, s.unit, participant.Payload(ctx))
	if err != nil {
		return err
	}
	tx := participant.BoltTx(ctx)
	pool := s.poolFor(txID)
	var inv Inventory
	if err := getJSON(tx, poolsBucket, pool, &inv); err != nil {
		return err
	}
	if inv.Free < units {
		return fmt.Errorf("%s in %s (free %d, need %d)", s.outOf, pool, inv.Free, units)
	}
	inv.Free -= units
	inv.Held += units
	if err := putJSON(tx, poolsBucket, pool, inv); err != nil {
		return err
	}
	return putJSON(tx, holdsBucket, txID, Hold{Pool: pool, Units: units})
}

// commit sells what prepare held: held -> sold.
func (s *Service) commit(ctx context.Context, txID string) error {
	return s.release(ctx, txID, func(inv *Inventory, units int64) { inv.Sold += units })
}

// rollback gives back what prepare held: held -> free.
func (s *Service) rollback(ctx context.Context, txID string) error {
	return s.release(ctx, txID, func(inv *Inventory, units int64) { inv.Free += units })
}

func (s *Service) release(ctx context.Context, txID string, to func(*Inventory, int64)) error {
	tx := participant.BoltTx(ctx)
	var h Hold
	if err := getJSON(tx, holdsBucket, txID, &h); err != nil {
		return fmt.Errorf("demo: hold of prepared transaction %q: %w", txID, err)
	}
	var inv Inventory
	if err := getJSON(tx, poolsBucket, h.Pool, &inv); err != nil {
		return err
	}
	inv.Held -= h.Units
	to(&inv, h.Units)
	if err := putJSON(tx, poolsBucket, h.Pool, inv); err != nil {
		return err
	}
	return tx.Bucket([]byte(holdsBucket)).Delete([]byte(txID))
}

var errNotFound = errors.New("not found")

func getJSON(tx *bolt.Tx, bucket, key string, v any) error {
	b := tx.Bucket([]byte(bucket))
	if b == nil {
		return fmt.Errorf("bucket %s: %w", bucket, errNotFound)
	}
	raw := b.Get([]byte(key))
	if raw == nil {
		return fmt.Errorf("%s/%s: %w", bucket, key, errNotFound)
	}
	return json.Unmarshal(raw, v)
}

func putJSON(tx *bolt.Tx, bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket([]byte(bucket)).Put([]byte(key), raw)
}

// State is the document GET /state returns: a consistent snapshot (one read transaction) of
// a service's inventory, the holds of prepared transactions and its ledger.
type State struct {
	// Kind is "flight", "hotel" or "payment".
	Kind string `json:"kind"`
	// Unit is how many units one transaction reserves (payment: cents charged).
	Unit int64 `json:"unit"`
	// Inventory has one entry per pool ("seats", "rooms", or "acct-0", "acct-1", ...).
	Inventory map[string]Inventory `json:"inventory"`
	// Holds maps the id of every transaction holding resources to what it holds.
	Holds map[string]Hold `json:"holds"`
	// Ledger maps every transaction id this service has a record of to its state:
	// "prepared", "refused" (voted NACK), "committed" or "rolled_back".
	Ledger map[string]participant.State `json:"ledger"`
	// Units maps each transaction whose Prepare carried a payload to the units it ordered
	// (see Order); the others ordered Unit.
	Units map[string]int64 `json:"units,omitempty"`
}

// State reads the service's current State.
func (s *Service) State() (State, error) {
	st := State{Kind: s.cfg.Kind, Unit: s.unit, Inventory: map[string]Inventory{}, Holds: map[string]Hold{}, Ledger: map[string]participant.State{}, Units: map[string]int64{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket([]byte(poolsBucket)).ForEach(func(k, v []byte) error {
			var inv Inventory
			err := json.Unmarshal(v, &inv)
			st.Inventory[string(k)] = inv
			return err
		})
		if err != nil {
			return err
		}
		err = tx.Bucket([]byte(holdsBucket)).ForEach(func(k, v []byte) error {
			var h Hold
			err := json.Unmarshal(v, &h)
			st.Holds[string(k)] = h
			return err
		})
		if err != nil {
			return err
		}
		return s.store.ForEach(tx, func(r participant.Record) error {
			st.Ledger[r.TransactionID] = r.State
			if n, err := unitsOf(s.cfg.Kind, s.unit, r.Payload); err == nil && len(r.Payload) > 0 {
				st.Units[r.TransactionID] = n
			}
			return nil
		})
	})
	return st, err
}

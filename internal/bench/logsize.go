package bench

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/txcoord/txcoord/fsm"
)

// TypeStat is the share of one entry kind in the log.
type TypeStat struct {
	Entries     int   `json:"entries"`
	DataBytes   int64 `json:"dataBytes"`   // the command encodings (raft.Log.Data)
	StoredBytes int64 `json:"storedBytes"` // what raft-boltdb stores: 8-byte key + msgpack raft.Log
}

// LogStats is what one node's raft.db holds, read after the node stopped.
type LogStats struct {
	Node       string              `json:"node"`
	FirstIndex uint64              `json:"firstIndex"`
	LastIndex  uint64              `json:"lastIndex"`
	Entries    int                 `json:"entries"`
	ByType     map[string]TypeStat `json:"byType"`
	// Transactions counts the Begin and FastDecide entries still in the log; Completions the items of the
	// Complete entries (more items than entries means completions were batched).
	Transactions int `json:"transactions"`
	Completions  int `json:"completions"`
	// StoredPerTxn and DataPerTxn: the bytes of the transaction entries (begin, define, decide,
	// complete, fail, progress) divided by Transactions. Entries of other kinds (the
	// floor's empty prunes, members, raft's own) are left out.
	StoredPerTxn  float64 `json:"storedBytesPerTxn"`
	DataPerTxn    float64 `json:"dataBytesPerTxn"`
	EntriesPerTxn float64 `json:"entriesPerTxn"`
	FileBytes     int64   `json:"raftDbFileBytes"`
	DirBytes      int64   `json:"dataDirBytes"` // raft.db and snapshots
}

var txnKinds = map[string]bool{"begin": true, "fast": true, "define": true, "decide": true, "complete": true, "fail": true, "progress": true}

func kindOf(l *raft.Log) (string, fsm.Command) {
	if l.Type != raft.LogCommand {
		return "raft:" + l.Type.String(), nil
	}
	cmd, err := fsm.Decode(l.Data)
	if err != nil {
		return "undecodable", nil
	}
	switch cmd.(type) {
	case *fsm.Begin:
		return "begin", cmd
	case *fsm.Decide, *fsm.DecideCommit:
		return "decide", cmd
	case *fsm.FastDecide:
		return "fast", cmd // a fast-mode transaction and its decision, in one entry
	case *fsm.PresumeAbort:
		return "presume-abort", cmd
	case *fsm.Define:
		return "define", cmd
	case *fsm.Complete:
		return "complete", cmd
	case *fsm.Fail:
		return "fail", cmd
	case *fsm.Progress:
		return "progress", cmd
	case *fsm.Prune:
		return "prune", cmd
	case *fsm.SetMember:
		return "setmember", cmd
	default:
		return fmt.Sprintf("cmd%d", cmd.Type()), cmd
	}
}

// MeasureLog reads dataDir/raft.db (read-only: the node must be stopped) and sizes every
// log entry in it.
func MeasureLog(node, dataDir string) (*LogStats, error) {
	path := filepath.Join(dataDir, "raft.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer db.Close()
	st := &LogStats{Node: node, ByType: map[string]TypeStat{}}
	var txnStored, txnData int64
	txnEntries := 0
	hd := &codec.MsgpackHandle{}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("logs"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var l raft.Log
			if err := codec.NewDecoder(bytes.NewReader(v), hd).Decode(&l); err != nil {
				return fmt.Errorf("decoding entry: %w", err)
			}
			if st.FirstIndex == 0 {
				st.FirstIndex = l.Index
			}
			st.LastIndex = l.Index
			st.Entries++
			kind, cmd := kindOf(&l)
			ts := st.ByType[kind]
			ts.Entries++
			ts.DataBytes += int64(len(l.Data))
			ts.StoredBytes += int64(len(k) + len(v))
			st.ByType[kind] = ts
			switch c := cmd.(type) {
			case *fsm.Begin, *fsm.FastDecide:
				st.Transactions++
			case *fsm.Complete:
				st.Completions += len(c.Items)
			}
			if txnKinds[kind] {
				txnEntries++
				txnStored += int64(len(k) + len(v))
				txnData += int64(len(l.Data))
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if st.Transactions > 0 {
		n := float64(st.Transactions)
		st.StoredPerTxn, st.DataPerTxn, st.EntriesPerTxn = float64(txnStored)/n, float64(txnData)/n, float64(txnEntries)/n
	}
	if fi, err := os.Stat(path); err == nil {
		st.FileBytes = fi.Size()
	}
	_ = filepath.WalkDir(dataDir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				st.DirBytes += fi.Size()
			}
		}
		return nil
	})
	return st, nil
}

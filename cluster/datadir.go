package cluster

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

// DamagedStoreError says that a file of the data directory cannot be used: raft.db is
// truncated or its header is garbage, or a snapshot's meta.json does not parse. Open
// returns it before bbolt or Raft touch the file (bbolt maps raft.db into memory and may
// crash the process with SIGSEGV or SIGBUS on a truncated one, instead of an error).
type DamagedStoreError struct {
	Path    string // the damaged file
	Problem string // what is wrong with it
}

func (e *DamagedStoreError) Error() string {
	return fmt.Sprintf("damaged store: %s: %s. This node cannot start on it. If the other members "+
		"have the data (a quorum is up), remove this node from the cluster, move its data directory "+
		"away and start it empty so that it joins again (docs/operations.md section 7); otherwise "+
		"restore the data directory from a backup (section 8). Keep the damaged copy for analysis",
		e.Path, e.Problem)
}

// checkDataDir checks raft.db and every snapshot's meta.json under dir.
func checkDataDir(dir string) error {
	if err := checkBoltFile(filepath.Join(dir, "raft.db")); err != nil {
		return err
	}
	return checkSnapshotMetas(filepath.Join(dir, "snapshots"))
}

const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	boltPageHeader = 16 // id, flags, count, overflow
	boltMetaSum    = 56 // bytes of the meta before its checksum
)

type boltMeta struct {
	pageSize uint32
	hwm      uint64 // pages in use: the file must hold at least hwm * pageSize bytes
	txid     uint64
}

// parseBoltMeta reads the meta page at b (bbolt's layout, little-endian on every platform
// txcoord ships for).
func parseBoltMeta(b []byte) (boltMeta, error) {
	if len(b) < boltPageHeader+boltMetaSum+8 {
		return boltMeta{}, errors.New("short meta page")
	}
	m := b[boltPageHeader:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, errors.New("not a bolt database (bad magic number)")
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("bolt format version %d, want %d", v, boltVersion)
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:boltMetaSum])
	if h.Sum64() != le.Uint64(m[boltMetaSum:]) {
		return boltMeta{}, errors.New("meta page checksum mismatch")
	}
	ps := le.Uint32(m[8:])
	if ps < 512 || ps > 1<<16 || ps&(ps-1) != 0 {
		return boltMeta{}, fmt.Errorf("page size %d", ps)
	}
	return boltMeta{pageSize: ps, hwm: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, nil
}

// checkBoltFile validates raft.db before bbolt maps it: at least one of the two meta pages
// is intact, and the file holds every page the newest intact one says is in use. Then it
// opens the file read-only and reads the ends of Raft's buckets with faults turned into
// panics that are recovered, so that a page that still faults is an error too. A missing
// or empty file is fine (a new node).
func checkBoltFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	size := st.Size()
	if size == 0 {
		return nil
	}
	head := make([]byte, 4096)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	head = head[:n]
	m0, err0 := parseBoltMeta(head)
	var best boltMeta
	var err1 error
	if err0 == nil {
		best = m0
		second := make([]byte, boltPageHeader+boltMetaSum+8)
		if _, err := f.ReadAt(second, int64(m0.pageSize)); err != nil {
			err1 = fmt.Errorf("second meta page: %w", err)
		} else if m1, e := parseBoltMeta(second); e != nil {
			err1 = e
		} else if m1.pageSize == m0.pageSize && m1.txid > m0.txid {
			best = m1
		}
	} else {
		// The first page is damaged; the second starts at the page size, unknown: try the
		// usual ones.
		err1 = errors.New("no intact meta page")
		for _, ps := range []int64{4096, 8192, 16384, 65536, 512, 1024, 2048, 32768} {
			b := make([]byte, boltPageHeader+boltMetaSum+8)
			if _, err := f.ReadAt(b, ps); err != nil {
				continue
			}
			if m1, e := parseBoltMeta(b); e == nil && int64(m1.pageSize) == ps {
				best, err1 = m1, nil
				break
			}
		}
	}
	if err0 != nil && err1 != nil {
		return &DamagedStoreError{Path: path, Problem: fmt.Sprintf("%d bytes and neither meta page is intact (%v; %v)", size, err0, err1)}
	}
	if need := int64(best.hwm) * int64(best.pageSize); size < need {
		return &DamagedStoreError{Path: path, Problem: fmt.Sprintf("truncated: %d bytes, but its header says %d pages of %d bytes (%d bytes) are in use", size, best.hwm, best.pageSize, need)}
	}
	return readBoltGuarded(path)
}

// readBoltGuarded opens path read-only and reads the first and last key of each bucket,
// turning memory faults and bbolt panics into a DamagedStoreError.
func readBoltGuarded(path string) (err error) {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- &DamagedStoreError{Path: path, Problem: fmt.Sprintf("reading it failed: %v", r)}
			}
		}()
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
		if errors.Is(err, bbolt.ErrTimeout) {
			done <- nil // in use: Open reports that with its own message
			return
		}
		if err != nil {
			done <- &DamagedStoreError{Path: path, Problem: "bbolt cannot open it: " + err.Error()}
			return
		}
		defer db.Close()
		err = db.View(func(tx *bbolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
				c := b.Cursor()
				c.First()
				c.Last()
				return nil
			})
		})
		if err != nil {
			done <- &DamagedStoreError{Path: path, Problem: "reading it failed: " + err.Error()}
			return
		}
		done <- nil
	}()
	return <-done
}

// checkSnapshotMetas makes sure every snapshot directory's meta.json parses. Raft skips a
// snapshot whose meta it cannot read and falls back to an older one, whose log may have
// been compacted away: the node would silently lose state. Incomplete snapshots (".tmp")
// are Raft's to clean up.
func checkSnapshotMetas(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		p := filepath.Join(dir, e.Name(), "meta.json")
		b, err := os.ReadFile(p)
		if err != nil {
			return &DamagedStoreError{Path: p, Problem: "cannot read it: " + err.Error()}
		}
		var meta struct {
			ID    string
			Index uint64
			Term  uint64
		}
		if err := json.Unmarshal(b, &meta); err != nil {
			return &DamagedStoreError{Path: p, Problem: "not valid snapshot metadata: " + err.Error()}
		}
		if meta.ID == "" || meta.Index == 0 || meta.Term == 0 {
			return &DamagedStoreError{Path: p, Problem: fmt.Sprintf("snapshot metadata without id, index or term (%q, %d, %d)", meta.ID, meta.Index, meta.Term)}
		}
	}
	return nil
}

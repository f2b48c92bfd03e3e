package cluster

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/txcoord/txcoord/version"
)

// Backup file format, version 1 (txcoord snapshot save):
//
//	"TXCB" | version (1 byte, 1) | uvarint n | n bytes of BackupMeta as JSON |
//	meta.Size bytes of the snapshot (the FSM's snapshot stream, as in a snapshot
//	directory's state.bin) | CRC-32C (Castagnoli) of every byte before it (4 bytes, LE)
//
// A backup is one Raft snapshot taken by the running node, with what a snapshot directory's
// meta.json holds, so that RestoreBackup can turn it into a data directory for the
// existing restore path (peers.json, RecoverCluster).
const (
	backupMagic   = "TXCB"
	backupVersion = 1
	maxMetaBytes  = 1 << 20
)

// ErrBadBackup is wrapped by errors for a file that is not a complete, intact backup.
var ErrBadBackup = errors.New("not a valid txcoord backup")

// BackupMeta describes a backup: the snapshot's Raft position and configuration and where it
// came from.
type BackupMeta struct {
	Index              uint64               `json:"index"` // Raft index the snapshot covers
	Term               uint64               `json:"term"`
	Configuration      raft.Configuration   `json:"configuration"`
	ConfigurationIndex uint64               `json:"configurationIndex"`
	SnapshotVersion    raft.SnapshotVersion `json:"snapshotVersion"`
	Size               int64                `json:"size"`   // bytes of snapshot state
	NodeID             string               `json:"nodeId"` // the node that took it
	Build              string               `json:"build"`  // its txcoord version
	TakenAt            time.Time            `json:"takenAt"`
}

// Backup takes a snapshot of this node's state now (raft.Snapshot: consistent, and the
// node keeps serving) and streams it to w in the backup format. When nothing was applied
// since the newest snapshot, that snapshot is streamed. It returns the backup's metadata.
func (n *Node) Backup(w io.Writer) (BackupMeta, error) {
	var (
		meta *raft.SnapshotMeta
		rc   io.ReadCloser
	)
	fut := n.Raft.Snapshot()
	err := fut.Error()
	switch {
	case err == nil:
		meta, rc, err = fut.Open()
	case errors.Is(err, raft.ErrNothingNewToSnapshot):
		var list []*raft.SnapshotMeta
		if list, err = n.snaps.List(); err == nil {
			if len(list) == 0 {
				return BackupMeta{}, errors.New("nothing to back up: the log is empty")
			}
			meta, rc, err = n.snaps.Open(list[0].ID)
		}
	}
	if err != nil {
		return BackupMeta{}, fmt.Errorf("taking a snapshot: %w", err)
	}
	defer rc.Close()
	bm := BackupMeta{Index: meta.Index, Term: meta.Term, Configuration: meta.Configuration, ConfigurationIndex: meta.ConfigurationIndex,
		SnapshotVersion: meta.Version, Size: meta.Size, NodeID: n.ID(), Build: version.String(), TakenAt: time.Now().UTC()}
	return bm, WriteBackup(w, bm, rc)
}

// WriteBackup writes a backup of meta and meta.Size bytes of state to w.
func WriteBackup(w io.Writer, meta BackupMeta, state io.Reader) error {
	crc := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	raw, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	bw.WriteString(backupMagic)
	bw.WriteByte(backupVersion)
	bw.Write(binary.AppendUvarint(nil, uint64(len(raw))))
	bw.Write(raw)
	if n, err := io.CopyN(bw, state, meta.Size); err != nil {
		return fmt.Errorf("snapshot state (%d of %d bytes): %w", n, meta.Size, err)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(binary.LittleEndian.AppendUint32(nil, crc.Sum32()))
	return err
}

// ReadBackup reads a backup's header and calls fn with its metadata and its state (exactly
// meta.Size bytes), then checks the checksum: an error wrapping ErrBadBackup after fn
// returned means the bytes fn saw are not to be trusted.
func ReadBackup(r io.Reader, fn func(meta BackupMeta, state io.Reader) error) error {
	crc := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	br := bufio.NewReaderSize(r, 64<<10)
	tr := &teeByteReader{r: br, h: crc}
	head := make([]byte, 5)
	if _, err := io.ReadFull(tr, head); err != nil || string(head[:4]) != backupMagic {
		return fmt.Errorf("%w: no backup header", ErrBadBackup)
	}
	if head[4] != backupVersion {
		return fmt.Errorf("%w: backup version %d, this build reads %d", ErrBadBackup, head[4], backupVersion)
	}
	n, err := binary.ReadUvarint(tr)
	if err != nil || n > maxMetaBytes {
		return fmt.Errorf("%w: metadata length", ErrBadBackup)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(tr, raw); err != nil {
		return fmt.Errorf("%w: metadata: %v", ErrBadBackup, err)
	}
	var meta BackupMeta
	if err := json.Unmarshal(raw, &meta); err != nil || meta.Size < 0 || meta.Index == 0 {
		return fmt.Errorf("%w: metadata: %v", ErrBadBackup, err)
	}
	state := &io.LimitedReader{R: tr, N: meta.Size}
	if err := fn(meta, state); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, state); err != nil || state.N > 0 {
		return fmt.Errorf("%w: truncated (%d bytes of state missing)", ErrBadBackup, state.N)
	}
	want := crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return fmt.Errorf("%w: truncated (no checksum)", ErrBadBackup)
	}
	if binary.LittleEndian.Uint32(sum[:]) != want {
		return fmt.Errorf("%w: checksum mismatch", ErrBadBackup)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: trailing bytes", ErrBadBackup)
	}
	return nil
}

type teeByteReader struct {
	r *bufio.Reader
	h hash.Hash32
}

func (t *teeByteReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.h.Write(p[:n])
	return n, err
}

func (t *teeByteReader) ReadByte() (byte, error) {
	b, err := t.r.ReadByte()
	if err == nil {
		t.h.Write([]byte{b})
	}
	return b, err
}

// VerifyBackup reads a whole backup file and checks it; it returns its metadata.
func VerifyBackup(path string) (BackupMeta, error) {
	f, err := os.Open(path)
	if err != nil {
		return BackupMeta{}, err
	}
	defer f.Close()
	var meta BackupMeta
	err = ReadBackup(f, func(m BackupMeta, _ io.Reader) error { meta = m; return nil })
	return meta, err
}

// RestoreBackup turns the backup file into a snapshot in the empty data directory dataDir
// (DATA/snapshots/<term>-<index>-<ms>/), for the restore path of docs/operations.md: write
// peers.json next to it (WritePeersJSON) and start the node. It refuses a directory that
// already holds Raft state, and leaves nothing behind when the file is damaged.
func RestoreBackup(path, dataDir string, lg hclog.Logger) (BackupMeta, error) {
	if lg == nil {
		lg = hclog.NewNullLogger()
	}
	for _, p := range []string{filepath.Join(dataDir, "raft.db"), filepath.Join(dataDir, "snapshots")} {
		if ents, err := os.ReadDir(p); err == nil && len(ents) > 0 {
			return BackupMeta{}, fmt.Errorf("%s already holds raft state: restore into an empty data directory", dataDir)
		} else if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return BackupMeta{}, fmt.Errorf("%s already holds raft state: restore into an empty data directory", dataDir)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return BackupMeta{}, err
	}
	defer f.Close()
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return BackupMeta{}, err
	}
	// The snapshot store's directory is made here and gone again if the file is refused:
	// the data directory is left as it was found (empty), not with an empty snapshots/.
	snapDir := filepath.Join(dataDir, "snapshots")
	_, statErr := os.Stat(snapDir)
	madeSnapDir := os.IsNotExist(statErr)
	store, err := raft.NewFileSnapshotStoreWithLogger(dataDir, 2, lg.Named("snapshot"))
	if err != nil {
		return BackupMeta{}, err
	}
	var meta BackupMeta
	var sink raft.SnapshotSink
	err = ReadBackup(f, func(m BackupMeta, state io.Reader) error {
		meta = m
		_, trans := raft.NewInmemTransport("")
		s, err := store.Create(m.SnapshotVersion, m.Index, m.Term, m.Configuration, m.ConfigurationIndex, trans)
		if err != nil {
			return err
		}
		sink = s
		_, err = io.Copy(s, state)
		return err
	})
	if err != nil {
		if sink != nil {
			_ = sink.Cancel()
		}
		if madeSnapDir {
			_ = os.Remove(snapDir) // empty once the sink is canceled; never removes data
		}
		return meta, err
	}
	return meta, sink.Close()
}

package httpapi

// History (issue 18): transactions pruned from the state, answered from the node's archive,
// and online backup.
//
//	GET /v1/transactions/{id}          falls back to the archive: "archived": true
//	GET /v1/history?from=&to=&limit=&after=
//	                                   archived transactions created in [from, to) (RFC 3339
//	                                   or unix ms, as createdFrom/createdTo of the list), in
//	                                   archive order (by Prune, then id), a page at a time
//	GET /v1/archive                    the archive's size, extent, gaps and health
//	GET /v1/admin/snapshot             a consistent snapshot of this node's state, in the
//	                                   backup format (cluster token); txcoord snapshot save

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/archive"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/fsm"
)

// History is the node's archive of pruned transactions (*archive.Archive implements it).
type History interface {
	Get(id string) (*fsm.Txn, bool, error)
	Scan(from, to int64, after archive.Cursor, fn func(t *fsm.Txn, at archive.Cursor) bool) error
	Stats() archive.Stats
}

// BackupSource is implemented by the Node given to New when it can stream a snapshot
// (*cluster.Node does): GET /v1/admin/snapshot is served then.
type BackupSource interface {
	Backup(w io.Writer) (cluster.BackupMeta, error)
}

// SnapshotPath is the admin route that streams a backup; it needs the cluster token.
const SnapshotPath = "/v1/admin/snapshot"

// ArchivedView is a transaction answered from the archive: its record when it was pruned,
// with "archived": true.
type ArchivedView struct {
	TransactionView
	Archived bool `json:"archived"`
}

// HistoryPage is GET /v1/history: a page and the cursor of the next one ("" on the last).
type HistoryPage struct {
	Transactions []ArchivedView `json:"transactions"`
	Next         string         `json:"next"`
	NodeID       string         `json:"nodeId"`
	// Gaps are Raft index ranges whose pruned transactions this node's archive never
	// received (it was restored from a snapshot beyond them); another node may have them.
	Gaps []archive.Gap `json:"gaps,omitempty"`
}

func (s *Server) historyRoutes() {
	if s.cfg.History != nil {
		s.echo.GET("/v1/history", s.listHistory)
		s.echo.GET("/v1/archive", func(c echo.Context) error { return c.JSON(http.StatusOK, s.cfg.History.Stats()) })
	}
	if b, ok := s.node.(BackupSource); ok {
		s.echo.GET(SnapshotPath, func(c echo.Context) error { return s.streamBackup(c, b) })
	}
}

// archived answers GET /v1/transactions/{id} for a transaction the state no longer holds.
func (s *Server) archived(c echo.Context, id string) (bool, error) {
	if s.cfg.History == nil {
		return false, nil
	}
	t, ok, err := s.cfg.History.Get(id)
	if err != nil {
		s.lg.Error("archive read failed", "id", id, "error", err)
		return true, writeError(c, &apiError{Code: codeInternal, Detail: "reading the archive: " + err.Error()})
	}
	if !ok {
		return false, nil
	}
	return true, c.JSON(http.StatusOK, ArchivedView{TransactionView: viewOf(t), Archived: true})
}

// archiveGaps is what a 404 adds when this node's archive has gaps: the transaction may
// have been pruned while the node was being sent a snapshot, and another node's archive
// may hold it ("" without gaps).
func (s *Server) archiveGaps() string {
	if s.cfg.History == nil {
		return ""
	}
	gaps := s.cfg.History.Stats().Gaps
	if len(gaps) == 0 {
		return ""
	}
	return fmt.Sprintf("; this node's archive misses the transactions pruned in Raft index ranges %v (its state was replaced by a snapshot): ask a node whose GET /v1/archive shows no gaps", gaps)
}

func (s *Server) listHistory(c echo.Context) error {
	if aerr := checkParams(c, "from", "to", "limit", "after"); aerr != nil {
		return writeError(c, aerr)
	}
	from, err := parseTime(c.QueryParam("from"))
	if err != nil {
		return writeError(c, badRequest(`"from": `+err.Error()))
	}
	to, err := parseTime(c.QueryParam("to"))
	if err != nil {
		return writeError(c, badRequest(`"to": `+err.Error()))
	}
	limit := 100
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return writeError(c, badRequest(`"limit" must be an integer from 1 to 1000`))
		}
		limit = n
	}
	after, err := archive.ParseCursor(c.QueryParam("after"))
	if err != nil {
		return writeError(c, badRequest(err.Error()))
	}
	page := HistoryPage{Transactions: []ArchivedView{}, NodeID: s.node.ID(), Gaps: s.cfg.History.Stats().Gaps}
	var last archive.Cursor
	full := false
	err = s.cfg.History.Scan(from, to, after, func(t *fsm.Txn, at archive.Cursor) bool {
		if len(page.Transactions) == limit {
			full = true
			return false
		}
		page.Transactions = append(page.Transactions, ArchivedView{TransactionView: viewOf(t), Archived: true})
		last = at
		return true
	})
	if err != nil {
		s.lg.Error("archive scan failed", "error", err)
		return writeError(c, &apiError{Code: codeInternal, Detail: "reading the archive: " + err.Error()})
	}
	if full {
		page.Next = last.String()
	}
	return c.JSON(http.StatusOK, page)
}

// streamBackup serves GET /v1/admin/snapshot: a snapshot is taken now and streamed. The
// response has no length (the snapshot is written as it is read); the backup's own size
// and checksum tell a complete one from a cut one.
func (s *Server) streamBackup(c echo.Context, b BackupSource) error {
	if err := checkParams(c); err != nil {
		return writeError(c, err)
	}
	w := c.Response()
	// A large state takes longer than the server's write timeout allows a transaction.
	_ = http.NewResponseController(w.Writer).SetWriteDeadline(time.Time{})
	w.Header().Set(echo.HeaderContentType, "application/octet-stream")
	w.Header().Set(echo.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="txcoord-%s.backup"`, s.node.ID()))
	started := &startedWriter{w: w}
	meta, err := b.Backup(started)
	if err != nil {
		s.lg.Error("backup failed", "error", err)
		if !started.n {
			w.Header().Del(echo.HeaderContentDisposition)
			code := codeInternal
			if errors.Is(err, cluster.ErrBadBackup) {
				code = codeUnavailable
			}
			return writeError(c, &apiError{Code: code, Detail: err.Error()})
		}
		return nil // the client sees a cut stream, which its checksum check rejects
	}
	s.lg.Info("backup streamed", "index", meta.Index, "term", meta.Term, "bytes", meta.Size)
	return nil
}

type startedWriter struct {
	w *echo.Response
	n bool
}

func (s *startedWriter) Write(p []byte) (int, error) {
	if !s.n {
		s.n = true
		s.w.WriteHeader(http.StatusOK)
	}
	return s.w.Write(p)
}

package httpapi

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/fsm"
)

var rfc3339ms = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func threeParts() []fsm.Participant {
	return []fsm.Participant{
		{Prepare: flight, Commit: "http://flight.example/commit", Rollback: "http://flight.example/rollback"},
		{Prepare: hotel, Commit: "http://hotel.example/commit", Rollback: "http://hotel.example/rollback"},
		{Prepare: pay, Commit: "http://pay.example/commit", Rollback: "http://pay.example/rollback"},
	}
}

func TestGetTransaction_View(t *testing.T) {
	e := newEnv(t, Config{})
	const created = int64(1_700_000_000_123)
	e.apply(&fsm.Begin{ID: "txn-1", Key: "order-9", CreatedAt: created, Deadline: created + 1500, Participants: threeParts()})
	e.apply(&fsm.Decide{ID: "txn-1", Decision: fsm.DecisionAbort, At: created + 200,
		Votes: []fsm.Vote{fsm.VoteYes, fsm.VoteNo, fsm.VoteError}, Reasons: []string{"", "no rooms", "HTTP 500"}})
	e.apply(&fsm.Progress{ID: "txn-1", Reports: []fsm.Report{
		{Acked: true, Attempts: 1}, {Attempts: 4, Error: "connection refused"}, {Acked: true, Attempts: 2}}})

	rec := e.do(http.MethodGet, "/v1/transactions/txn-1", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d: %s", rec.Code, rec.Body)
	}
	checkJSONType(t, rec.Header())
	var v TransactionView
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v.TransactionID != "txn-1" || v.Status != "rolling_back" || v.Decision != "abort" || v.IdempotencyKey != "order-9" || v.TimeoutMs != 1500 {
		t.Errorf("view = %+v", v)
	}
	for name, ts := range map[string]string{"createdAt": v.CreatedAt, "deadline": v.Deadline, "decidedAt": v.DecidedAt} {
		if !rfc3339ms.MatchString(ts) {
			t.Errorf("%s = %q, not RFC 3339 UTC with ms", name, ts)
		}
	}
	if got, _ := time.Parse(time.RFC3339, v.CreatedAt); got.UnixMilli() != created {
		t.Errorf("createdAt = %s, want unix ms %d", v.CreatedAt, created)
	}
	if got, _ := time.Parse(time.RFC3339, v.Deadline); got.UnixMilli() != created+1500 {
		t.Errorf("deadline = %s", v.Deadline)
	}
	if strings.Contains(rec.Body.String(), "finishedAt") {
		t.Errorf("finishedAt present before the transaction finished: %s", rec.Body)
	}
	want := []ParticipantView{
		{Prepare: flight, Commit: "http://flight.example/commit", Rollback: "http://flight.example/rollback", Vote: "ACK", Acknowledged: true, Attempts: 1},
		{Prepare: hotel, Commit: "http://hotel.example/commit", Rollback: "http://hotel.example/rollback", Vote: "NACK", Reason: "no rooms", Attempts: 4, LastError: "connection refused"},
		{Prepare: pay, Commit: "http://pay.example/commit", Rollback: "http://pay.example/rollback", Vote: "error", Reason: "HTTP 500", Acknowledged: true, Attempts: 2},
	}
	if !reflect.DeepEqual(v.Participants, want) {
		t.Errorf("participants =\n%+v\nwant\n%+v", v.Participants, want)
	}
	wantErrs := []string{hotel + ": NACK: no rooms", "http://hotel.example/rollback: connection refused (attempt 4)", pay + ": HTTP 500"}
	if !reflect.DeepEqual(v.Errors, wantErrs) {
		t.Errorf("errors = %q, want %q", v.Errors, wantErrs)
	}

	// Completion adds finishedAt.
	e.apply(&fsm.Complete{At: created + 900, Items: []fsm.Completion{{ID: "txn-1", Attempts: []uint32{1, 5, 2}}}})
	rec = e.do(http.MethodGet, "/v1/transactions/txn-1", nil)
	v = TransactionView{}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v.Status != "rolled_back" || !rfc3339ms.MatchString(v.FinishedAt) || !v.Participants[1].Acknowledged || v.Participants[1].LastError != "" || v.Participants[1].Attempts != 5 {
		t.Errorf("after Complete: %+v", v)
	}
}

func TestGetTransaction_UnknownIs404(t *testing.T) {
	e := newEnv(t, Config{})
	rec := e.do(http.MethodGet, "/v1/transactions/no-such-txn", nil)
	if d := checkRec(t, rec, http.StatusNotFound, codeNotFound)["detail"]; !strings.Contains(d, "no-such-txn") {
		t.Errorf("detail = %q", d)
	}
}

func listPage(t *testing.T, e *env, query string) TransactionList {
	t.Helper()
	rec := e.do(http.MethodGet, "/v1/transactions"+query, nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", query, rec.Code, rec.Body)
	}
	var l TransactionList
	if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestListTransactions_PagingReturnsEveryIDOnceInOrder(t *testing.T) {
	e := newEnv(t, Config{})
	const n = 250
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("txn-%04d", i)
	}
	order := rand.Perm(n) // insertion order must not matter
	for _, i := range order {
		e.apply(&fsm.Begin{ID: ids[i], CreatedAt: 1, Deadline: 2, Participants: threeParts()[:1]})
	}
	var got []string
	after, pages := "", 0
	for {
		l := listPage(t, e, "?order=asc&limit=100&after="+after)
		pages++
		for _, v := range l.Transactions {
			got = append(got, v.TransactionID)
		}
		if l.Next == "" {
			break
		}
		after = l.Next
		if pages > 10 {
			t.Fatal("paging does not end")
		}
	}
	if pages != 3 || !reflect.DeepEqual(got, ids) {
		t.Errorf("%d pages, %d ids; want 3 pages with every id once in order", pages, len(got))
	}

	// The default is newest first, 100 per page.
	l := listPage(t, e, "")
	if len(l.Transactions) != 100 || l.Transactions[0].TransactionID != ids[n-1] || l.Transactions[99].TransactionID != ids[n-100] {
		t.Errorf("default page: %d txns, first %s", len(l.Transactions), l.Transactions[0].TransactionID)
	}
	if l2 := listPage(t, e, "?after="+l.Next); len(l2.Transactions) != 100 || l2.Transactions[0].TransactionID != ids[n-101] {
		t.Errorf("second default page: %d txns", len(l2.Transactions))
	}
}

func TestListTransactions_StatusFilter(t *testing.T) {
	e := newEnv(t, Config{})
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("txn-%02d", i)
		r := e.apply(&fsm.Begin{ID: id, CreatedAt: 1, Deadline: 2, Participants: threeParts()[:1]})
		if i%2 == 0 {
			e.decide(r.Txn, fsm.DecisionCommit, nil, nil)
			e.complete(r.Txn)
		}
	}
	l := listPage(t, e, "?status=committed&limit=3&order=asc")
	var got []string
	for _, v := range l.Transactions {
		if v.Status != "committed" {
			t.Errorf("%s is %s", v.TransactionID, v.Status)
		}
		got = append(got, v.TransactionID)
	}
	if strings.Join(got, ",") != "txn-00,txn-02,txn-04" || l.Next == "" {
		t.Errorf("page = %v next %q", got, l.Next)
	}
	l = listPage(t, e, "?status=committed&limit=3&order=asc&after="+l.Next)
	if len(l.Transactions) != 2 || l.Next != "" {
		t.Errorf("second page = %d txns, next %q", len(l.Transactions), l.Next)
	}
	if l := listPage(t, e, "?status=preparing"); len(l.Transactions) != 5 {
		t.Errorf("preparing: %d", len(l.Transactions))
	}
	// An empty page is an empty array, not null.
	rec := e.do(http.MethodGet, "/v1/transactions?status=failed", nil)
	if !strings.Contains(rec.Body.String(), `"transactions":[]`) {
		t.Errorf("empty page: %s", rec.Body)
	}
}

func TestListTransactions_BadQueryIs400(t *testing.T) {
	e := newEnv(t, Config{})
	for _, q := range []string{"status=done", "status=COMMITTED", "limit=0", "limit=-1", "limit=1001", "limit=x", "limit=1.5", "limit=99999999999999999999",
		"order=up", "after=txn-04", "after=x_", "createdFrom=yesterday", "createdTo=0", "createdFrom=2000&createdTo=1000", "consistency=strong", "nope=1", "limit=1&limit=2", "status="} {
		t.Run(q, func(t *testing.T) {
			checkRec(t, e.do(http.MethodGet, "/v1/transactions?"+q, nil), http.StatusBadRequest, codeBadRequest)
		})
	}
	for _, q := range []string{"limit=1", "limit=1000", "status=rolled_back"} {
		if rec := e.do(http.MethodGet, "/v1/transactions?"+q, nil); rec.Code != http.StatusOK {
			t.Errorf("%s: %d %s", q, rec.Code, rec.Body)
		}
	}
}

func TestRoutes_UnknownAndWrongMethod(t *testing.T) {
	e := newEnv(t, Config{})
	for _, tc := range []struct {
		method, path string
		status       int
		code         api.Code
	}{
		{http.MethodGet, "/nope", http.StatusNotFound, codeNotFound},
		{http.MethodGet, "/v2/transactions", http.StatusNotFound, codeNotFound},
		{http.MethodPost, "/v1/cluster/x", http.StatusNotFound, codeNotFound},
		{http.MethodPut, "/v1/transactions", http.StatusMethodNotAllowed, codeMethod},
		{http.MethodDelete, "/v1/transactions", http.StatusMethodNotAllowed, codeMethod},
		{http.MethodPost, "/v1/cluster", http.StatusMethodNotAllowed, codeMethod},
		{http.MethodDelete, "/v1/transactions/abc", http.StatusMethodNotAllowed, codeMethod},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rec := e.do(tc.method, tc.path, strings.NewReader(threeServices))
			checkRec(t, rec, tc.status, tc.code)
		})
	}
	if len(e.sub.Calls()) != 0 {
		t.Error("Submitter called")
	}
}

func TestHealthz(t *testing.T) {
	e := newEnv(t, Config{})
	e.node.setStatus(cluster.Status{Ready: false}) // liveness does not depend on readiness
	rec := e.do(http.MethodGet, "/healthz", nil)
	checkJSONType(t, rec.Header())
	var m map[string]string
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &m) != nil || m["status"] != "ok" || m["nodeId"] != e.node.id {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}

func TestReadyz(t *testing.T) {
	e := newEnv(t, Config{})
	e.node.setStatus(cluster.Status{NodeID: "n1", Role: "follower", LeaderID: "n2", Ready: true, CommitIndex: 7, AppliedIndex: 7})
	rec := e.do(http.MethodGet, "/readyz", nil)
	checkJSONType(t, rec.Header())
	var m map[string]any
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &m) != nil || m["ready"] != true || m["leaderId"] != "n2" {
		t.Errorf("ready: %d %s", rec.Code, rec.Body)
	}
	if rec.Header().Get("Retry-After") != "" {
		t.Error("Retry-After on a ready node")
	}

	e.node.setStatus(cluster.Status{NodeID: "n1", Role: "candidate", Ready: false})
	rec = e.do(http.MethodGet, "/readyz", nil)
	checkJSONType(t, rec.Header())
	m = nil
	if rec.Code != http.StatusServiceUnavailable || json.Unmarshal(rec.Body.Bytes(), &m) != nil || m["ready"] != false || m["reason"] != "no leader known" {
		t.Errorf("not ready: %d %s, want 503 with the reason (QA F7)", rec.Code, rec.Body)
	}
	if rec.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After on a node that is not ready")
	}
}

func TestCluster_ReturnsNodeStatus(t *testing.T) {
	e := newEnv(t, Config{})
	want := cluster.Status{
		NodeID: "n1", Role: "follower", LeaderID: "n2", LeaderHTTP: "127.0.0.1:8082", Term: 4,
		CommitIndex: 10, AppliedIndex: 9, LastIndex: 10, LastContact: "2026-01-02T03:04:05Z", Ready: true,
		Members: []cluster.Member{
			{ID: "n1", RaftAddr: "127.0.0.1:7001", HTTPAddr: "127.0.0.1:8081", Suffrage: "voter"},
			{ID: "n2", RaftAddr: "127.0.0.1:7002", HTTPAddr: "127.0.0.1:8082", Suffrage: "voter", Leader: true},
		},
	}
	e.node.setStatus(want)
	rec := e.do(http.MethodGet, "/v1/cluster", nil)
	checkJSONType(t, rec.Header())
	var got cluster.Status
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &got) != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("%d %s\nwant %+v", rec.Code, rec.Body, want)
	}
}

// Package api holds txcoord's HTTP API on the wire: the request and answer bodies, the
// transaction and cluster views, the error body and its stable codes. It depends on the
// standard library only, so a client (the Go SDK in package client, the txcoord CLI, a test
// tool) can use it without pulling in the server.
//
// The routes (README's API section and api/openapi.json describe each):
//
//	POST /v1/transactions                      TransactionRequest -> 200 Outcome (202 while phase two runs)
//	GET  /v1/transactions/{id}                 -> TransactionView
//	GET  /v1/transactions/{id}/outcome         -> InquiryAnswer (?deadline=: the Prepare's)
//	GET  /v1/transactions                      -> TransactionList (filters: ListParams)
//	GET  /v1/stuck?olderThan=MS                -> StuckList
//	POST /v1/transactions/{id}/retry|resolve   OperatorRequest -> TransactionView
//	GET  /v1/cluster                           -> ClusterStatus
//	POST /v1/cluster/join|remove|transfer-leadership  MembershipRequest -> ClusterStatus
//
// Every error is an Error with one of the Codes.
package api

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/txcoord/txcoord/participant/protocol"
)

// Headers a client sends or reads.
const (
	// HeaderIdempotencyKey on POST /v1/transactions: a retry with the same key returns the
	// same transaction and never starts a second one (at most 200 printable ASCII bytes).
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderRetryAfter on 429 and 503 answers: seconds to wait before retrying.
	HeaderRetryAfter = "Retry-After"
	// HeaderAuthorization carries "Bearer <token>" when the cluster has tokens configured.
	HeaderAuthorization = "Authorization"
)

// Transaction statuses, the "status" of an Outcome or a TransactionView.
const (
	StatusPreparing   = "preparing"    // phase one: votes being collected
	StatusCommitting  = "committing"   // decided commit; phase two running
	StatusRollingBack = "rolling_back" // decided abort; phase two running
	StatusCommitted   = "committed"    // final
	StatusRolledBack  = "rolled_back"  // final
	StatusFailed      = "failed"       // heuristic: a participant kept refusing phase two; an operator must act
)

// Statuses lists every transaction status.
var Statuses = []string{StatusPreparing, StatusCommitting, StatusRollingBack, StatusCommitted, StatusRolledBack, StatusFailed}

// Final reports whether status is committed or rolled_back: nothing will change it.
func Final(status string) bool { return status == StatusCommitted || status == StatusRolledBack }

// Terminal reports whether the coordinator has stopped working on a transaction in status:
// committed, rolled_back or failed (failed waits for an operator's retry or resolve).
func Terminal(status string) bool { return Final(status) || status == StatusFailed }

// Service is one participant of a TransactionRequest. With only Prepare set it travels as
// the prepare URL string (commit and rollback URLs are derived by replacing the last path
// segment "prepare"); otherwise as {"prepare","commit","rollback","payload"}, where commit
// and rollback are given together or both left out (derived), and Payload, any JSON value,
// is sent to the participant in its Prepare (at most 8 KiB per participant and 64 KiB per
// transaction by default; the cluster needs feature level 2, else 409 feature_unavailable).
type Service struct {
	Prepare  string          `json:"prepare"`
	Commit   string          `json:"commit,omitempty"`
	Rollback string          `json:"rollback,omitempty"`
	Payload  json.RawMessage `json:"payload,omitempty"`
}

// MarshalJSON writes the string form when Commit, Rollback and Payload are empty.
func (s Service) MarshalJSON() ([]byte, error) {
	if s.Commit == "" && s.Rollback == "" && len(s.Payload) == 0 {
		return json.Marshal(s.Prepare)
	}
	type plain Service
	return json.Marshal(plain(s))
}

// UnmarshalJSON reads either form.
func (s *Service) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		*s = Service{}
		return json.Unmarshal(b, &s.Prepare)
	}
	if len(b) == 0 || b[0] != '{' {
		return errors.New("a service is a prepare URL or {\"prepare\",\"commit\",\"rollback\"}")
	}
	type plain Service
	return json.Unmarshal(b, (*plain)(s))
}

// TransactionRequest is the body of POST /v1/transactions.
type TransactionRequest struct {
	// Services are the participants, 1 to 32 (the server's MaxServices).
	Services []Service `json:"services"`
	// TimeoutMs bounds phase one in ms, 1 to 60000; nil: the server's default (5000).
	TimeoutMs *int64 `json:"timeout,omitempty"`
	// Mode is ModeDefault or ModeFast; "": the server's --default-mode.
	Mode string `json:"mode,omitempty"`
}

// The modes of a TransactionRequest (docs/fast-path.md).
const (
	// ModeDefault logs the transaction before any Prepare: for participants that cannot
	// ask for an outcome.
	ModeDefault = "default"
	// ModeFast logs one entry, with the decision, after phase one: one consensus round
	// fewer. Its participants must ask for outcomes (the inquiry,
	// docs/participant-protocol.md). Needs cluster feature level 3.
	ModeFast = "fast"
)

// Outcome is the answer to POST /v1/transactions: 200 with a terminal status, or 202 with
// the status phase two is still in. Errors holds the reasons of a rollback (participant
// NACKs and errors), never nil on the wire.
type Outcome struct {
	TransactionID string   `json:"transactionId"`
	Status        string   `json:"status"`
	Errors        []string `json:"errors"`
}

// ParticipantView is one participant in TransactionView.
type ParticipantView struct {
	Prepare      string `json:"prepare"`
	Commit       string `json:"commit"`
	Rollback     string `json:"rollback"`
	Vote         string `json:"vote,omitempty"`   // "ACK", "NACK", "error" or absent
	Reason       string `json:"reason,omitempty"` // NACK reason or phase-one error
	Acknowledged bool   `json:"acknowledged"`     // phase two acknowledged
	Attempts     uint32 `json:"attempts"`         // phase-two calls made
	LastError    string `json:"lastError,omitempty"`
	// Payload is the participant's payload while the transaction prepares; the coordinator
	// drops payloads once the decision is logged (the participant keeps its own copy).
	Payload json.RawMessage `json:"payload,omitempty"`
}

// TransactionView is GET /v1/transactions/{id} (and an element of the lists). Times are
// RFC 3339 UTC with ms, omitted while unset.
type TransactionView struct {
	TransactionID  string            `json:"transactionId"`
	Status         string            `json:"status"`
	Decision       string            `json:"decision,omitempty"` // "commit" or "abort"
	IdempotencyKey string            `json:"idempotencyKey,omitempty"`
	TimeoutMs      int64             `json:"timeoutMs"`
	CreatedAt      string            `json:"createdAt"`
	Deadline       string            `json:"deadline"`
	DecidedAt      string            `json:"decidedAt,omitempty"`
	FinishedAt     string            `json:"finishedAt,omitempty"`
	Note           string            `json:"note,omitempty"` // the operator's note of a retry or resolve
	Index          uint64            `json:"index"`          // Raft index of the last change
	Participants   []ParticipantView `json:"participants"`
	Errors         []string          `json:"errors"`
	// Read says how a GET was served (level, node, applied index); absent elsewhere.
	Read *ReadInfo `json:"read,omitempty"`
}

// TransactionList is GET /v1/transactions: a page and the cursor of the next one ("" on
// the last page; a page may be short, even empty, with Next set when a participant filter
// examined its bound of records).
type TransactionList struct {
	Transactions []TransactionView `json:"transactions"`
	Next         string            `json:"next"`
	Read         *ReadInfo         `json:"read,omitempty"`
}

// StuckList is GET /v1/stuck: failed transactions and those unfinished for longer than
// olderThan ms.
type StuckList struct {
	Transactions []TransactionView `json:"transactions"`
}

// Read consistency levels, the ?consistency= of the GET routes (docs/reads.md).
const (
	ConsistencyDefault      = "default"      // read your writes
	ConsistencyStale        = "stale"        // this node's state as it is
	ConsistencyLinearizable = "linearizable" // the leader confirms its leadership first
)

// ReadInfo says how a read was served: the "read" member of a transaction or a page.
type ReadInfo struct {
	// Consistency is the level that served it: "default", "stale" or "linearizable".
	Consistency string `json:"consistency"`
	// NodeID is the node whose state answered (the leader, for a forwarded read).
	NodeID string `json:"nodeId"`
	// Role is that node's role when it read: "leader" or "follower".
	Role string `json:"role"`
	// AppliedIndex is that node's applied Raft index when it read.
	AppliedIndex uint64 `json:"appliedIndex"`
	// CommitIndex, on a follower, is the highest commit index it knows (Raft's, or the
	// leader-confirmed one it last learnt): AppliedIndex may lag it, and it may lag the
	// leader by what arrived since LastContactMs.
	CommitIndex uint64 `json:"commitIndex,omitempty"`
	// LastContactMs, on a follower, is how long ago (ms) it last heard from the leader; -1:
	// never since it started.
	LastContactMs *int64 `json:"lastContactMs,omitempty"`
}

// ReadIndexAnswer is GET /v1/cluster/read-index: the leader's commit index, confirmed by
// a quorum after the request arrived.
type ReadIndexAnswer struct {
	LeaderID    string `json:"leaderId"`
	CommitIndex uint64 `json:"commitIndex"`
}

// The outcomes of an InquiryAnswer, as the participant protocol defines them
// (participant/protocol).
const (
	OutcomeCommitted  = protocol.OutcomeCommitted  // apply Commit
	OutcomeRolledBack = protocol.OutcomeRolledBack // apply Rollback
	OutcomePending    = protocol.OutcomePending    // not decided yet: ask again after Retry-After seconds
)

// InquiryAnswer is GET /v1/transactions/{id}/outcome: what became of a transaction, for a
// participant that voted on it (docs/participant-protocol.md, "Inquiry"):
// {"transactionId": "...", "outcome": "committed" | "rolled_back" | "pending"} (with a
// Retry-After header for pending). It is the participant protocol's type, the one the
// participant library parses (protocol.ParseOutcome).
type InquiryAnswer = protocol.Outcome

// OperatorRequest is the body of POST /v1/transactions/{id}/retry and /resolve. Note is at
// most 1024 bytes; resolve requires one (say how the transaction was settled).
type OperatorRequest struct {
	Note string `json:"note"`
}

// MembershipRequest is the body of the membership routes; each uses the fields it needs:
// join {"id","raftAddr","httpAddr"}, remove {"id"}, transfer-leadership {"to"} ("" or
// absent: any up-to-date voter).
type MembershipRequest struct {
	ID       string `json:"id,omitempty"`
	RaftAddr string `json:"raftAddr,omitempty"`
	HTTPAddr string `json:"httpAddr,omitempty"`
	To       string `json:"to,omitempty"`
}

// Member is one server of the Raft configuration as GET /v1/cluster shows it.
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raftAddr"`
	HTTPAddr string `json:"httpAddr,omitempty"`
	Suffrage string `json:"suffrage"` // "voter", "nonvoter" or "staging"
	Leader   bool   `json:"leader"`
	// Version and FeatureLevel are the member's build as the answering node last learnt it;
	// "" and 0 until it answered.
	Version      string `json:"version,omitempty"`
	FeatureLevel uint32 `json:"featureLevel"`
	// ClockOffsetMs is the member's wall clock minus the answering node's (ms; absent for
	// itself and while unknown).
	ClockOffsetMs *float64 `json:"clockOffsetMs,omitempty"`
	// Health is the member's health as the leader's autopilot measures it; only the
	// leader's answer carries it.
	Health *MemberHealth `json:"health,omitempty"`
}

// MemberHealth is a member's health as the leader's autopilot last measured it.
type MemberHealth struct {
	// Healthy: reachable, on the leader's term, heard from the leader recently enough and
	// not too far behind (docs/operations.md, "Joining and autopilot").
	Healthy bool `json:"healthy"`
	// Status is "alive" (the leader's probes are answered), "failed" or "unknown".
	Status string `json:"status"`
	// StableSince is when Healthy last changed (RFC 3339).
	StableSince string `json:"stableSince,omitempty"`
	// LastContactMs is how long ago the member last heard from the leader (ms; 0 for the
	// leader, -1 when it never did).
	LastContactMs float64 `json:"lastContactMs"`
	LastTerm      uint64  `json:"lastTerm"`
	LastIndex     uint64  `json:"lastIndex"`
	// Lag is how many entries the member is behind the leader.
	Lag uint64 `json:"lag"`
}

// AutopilotStatus is the cluster's health as the leader's autopilot sees it.
type AutopilotStatus struct {
	Healthy            bool    `json:"healthy"`          // every voter is healthy
	FailureTolerance   int     `json:"failureTolerance"` // voters that may fail with a quorum left
	StabilizationMs    float64 `json:"stabilizationMs"`
	CleanupDeadServers bool    `json:"cleanupDeadServers"`
	DeadServerAfterMs  float64 `json:"deadServerAfterMs"`
}

// ClusterStatus is GET /v1/cluster: the answering node's view of the cluster.
type ClusterStatus struct {
	NodeID       string `json:"nodeId"`
	Role         string `json:"role"` // "leader", "follower", "candidate" or "shutdown"
	LeaderID     string `json:"leaderId,omitempty"`
	LeaderHTTP   string `json:"leaderAddr,omitempty"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commitIndex"`
	AppliedIndex uint64 `json:"appliedIndex"`
	LastIndex    uint64 `json:"lastIndex"`
	LastContact  string `json:"lastContact,omitempty"` // RFC 3339, followers only
	Ready        bool   `json:"ready"`
	// Version is the node's build; FeatureLevel the level the cluster has enabled;
	// MaxFeatureLevel the highest the node's build supports.
	Version         string `json:"version"`
	FeatureLevel    uint32 `json:"featureLevel"`
	MaxFeatureLevel uint32 `json:"maxFeatureLevel"`
	// ClockOffsetMs is the node's estimated wall-clock offset from the cluster (ms);
	// MaxClockOffsetMs the tolerance.
	ClockOffsetMs    float64  `json:"clockOffsetMs"`
	MaxClockOffsetMs float64  `json:"maxClockOffsetMs"`
	Members          []Member `json:"members"`
	// Autopilot is the cluster's health on the leader (absent elsewhere).
	Autopilot *AutopilotStatus `json:"autopilot,omitempty"`
}

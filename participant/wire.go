package participant

import (
	"time"

	"github.com/txcoord/txcoord/participant/protocol"
)

// The wire types of the participant protocol, re-exported from participant/protocol so that
// a service needs one import. Each is an alias: the documentation is in package protocol.
type (
	// Phase names one of the three calls a participant receives (protocol.Phase).
	Phase = protocol.Phase
	// Status is the "status" field of a reply: ACK or NACK (protocol.Status).
	Status = protocol.Status
	// Request is the JSON body of every call (protocol.Request).
	Request = protocol.Request
	// Reply is the JSON body of a participant's answer (protocol.Reply).
	Reply = protocol.Reply
	// Endpoints are the prepare, commit and rollback URLs of one participant
	// (protocol.Endpoints).
	Endpoints = protocol.Endpoints
)

// The three phases (protocol.PhasePrepare and so on).
const (
	PhasePrepare  = protocol.PhasePrepare
	PhaseCommit   = protocol.PhaseCommit
	PhaseRollback = protocol.PhaseRollback
)

// The two reply statuses (protocol.ACK, protocol.NACK).
const (
	ACK  = protocol.ACK
	NACK = protocol.NACK
)

// Headers and layouts of the protocol (see package protocol).
const (
	// IdempotencyKeyHeader carries "<transactionId>:<phase>" on every call.
	IdempotencyKeyHeader = protocol.IdempotencyKeyHeader
	// NodeHeader carries the id of the node that sent a call.
	NodeHeader = protocol.NodeHeader
	// TermHeader carries the Raft term of the leader that sent a call; the Handler refuses
	// a call whose term is lower than the highest it has seen for the transaction.
	TermHeader = protocol.TermHeader
	// DeadlineFormat is the layout of Request.Deadline: RFC 3339 in UTC with milliseconds.
	DeadlineFormat = protocol.DeadlineFormat
)

// FormatDeadline renders t as Request.Deadline expects it (protocol.FormatDeadline).
func FormatDeadline(t time.Time) string { return protocol.FormatDeadline(t) }

// Derive returns a participant's endpoints given its prepare URL (protocol.Derive); the
// error wraps protocol.ErrBadURL.
func Derive(prepareURL string) (Endpoints, error) { return protocol.Derive(prepareURL) }

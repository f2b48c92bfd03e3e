package fsm

import (
	"errors"
	"fmt"

	"github.com/txcoord/txcoord/internal/codec"
)

// CommandType is the leading byte of every encoded command. Numbers are part of the log
// format: only ever append, never reuse. A type whose IgnoreUnknown bit is set may be
// skipped by a build that does not know it; every other unknown type halts the FSM.
type CommandType byte

// IgnoreUnknown is the bit of a CommandType that marks a command a build may skip when it
// does not know the type: one whose effect no decision, vote or phase-two step depends on
// (Nomad's IgnoreUnknownTypeFlag). No type uses it yet.
const IgnoreUnknown CommandType = 0x80

// The command types.
const (
	CmdBegin        CommandType = 1
	CmdDecide       CommandType = 2
	CmdComplete     CommandType = 3
	CmdFail         CommandType = 4
	CmdProgress     CommandType = 5
	CmdRetry        CommandType = 6
	CmdResolve      CommandType = 7
	CmdPrune        CommandType = 8
	CmdSetMember    CommandType = 9
	CmdDefine       CommandType = 10
	CmdDecideCommit CommandType = 11
	CmdSetFeatures  CommandType = 12
	// CmdBeginPayloads is a Begin whose participants carry payloads (feature level 2). A
	// Begin without payloads keeps type 1, so that it applies on every build.
	CmdBeginPayloads CommandType = 13
	// CmdPresumeAbort records a presumed abort for an id with no record (feature level 3).
	CmdPresumeAbort CommandType = 14
	// CmdFastDecide is a fast-mode transaction with its decision (feature level 3).
	CmdFastDecide CommandType = 15
	// CmdBeginTraced is a Begin that carries the W3C trace context of the transaction's
	// span (feature level 4), with or without payloads. A Begin without a trace keeps
	// type 1 or 13, so that tracing off writes what every earlier build reads.
	CmdBeginTraced CommandType = 16
)

// maxCommandType is the highest type this build knows (for the halt message).
const maxCommandType = CmdBeginTraced

// commandSpec is what Decode and the feature gate know of one command type.
type commandSpec struct {
	new func() Command
	// level is the cluster feature level that must be enabled before a leader proposes
	// the type (version.FeatureLevel lists the levels). SetFeatures has 0: it is what
	// enables a level, and is gated on the servers' advertised levels instead.
	level uint32
}

var commandSpecs = map[CommandType]commandSpec{
	CmdBegin:        {new: func() Command { return new(Begin) }},
	CmdDecide:       {new: func() Command { return new(Decide) }},
	CmdComplete:     {new: func() Command { return new(Complete) }},
	CmdFail:         {new: func() Command { return new(Fail) }},
	CmdProgress:     {new: func() Command { return new(Progress) }},
	CmdRetry:        {new: func() Command { return new(Retry) }},
	CmdResolve:      {new: func() Command { return new(Resolve) }},
	CmdPrune:        {new: func() Command { return new(Prune) }},
	CmdSetMember:    {new: func() Command { return new(SetMember) }},
	CmdDefine:       {new: func() Command { return new(Define) }},
	CmdDecideCommit: {new: func() Command { return new(DecideCommit) }},
	CmdSetFeatures:  {new: func() Command { return new(SetFeatures) }},
	// Decode gives a type-13 Begin non-nil Payloads, so it encodes as type 13 again.
	CmdBeginPayloads: {new: func() Command { return &Begin{Payloads: []string{}} }, level: 2},
	CmdPresumeAbort:  {new: func() Command { return new(PresumeAbort) }, level: 3},
	CmdFastDecide:    {new: func() Command { return new(FastDecide) }, level: 3},
	CmdBeginTraced:   {new: func() Command { return &Begin{decodeTraced: true} }, level: 4},
}

// RequiredLevel returns the cluster feature level that must be enabled before a command of
// type t may be proposed (0 for every type earlier builds know).
func RequiredLevel(t CommandType) uint32 { return commandSpecs[t].level }

// ErrSkippable is returned by Decode for an unknown type that carries the IgnoreUnknown
// bit: Apply skips such an entry.
var ErrSkippable = errors.New("unknown command type marked ignore-unknown")

// ErrUnknownCommand is wrapped (with ErrCorrupt) by Decode's error for a type this build
// does not know: a newer build wrote it.
var ErrUnknownCommand = errors.New("unknown command type")

// SetFeatures enables a cluster feature level: from its index on, the leader may propose
// the command types of that level. The leader logs it only once every server in the Raft
// configuration advertises the level (Nomad's ServersMeetMinimumVersion), so no server meets
// a type it cannot apply. A build whose version.FeatureLevel is lower halts at it. Levels
// never go down.
type SetFeatures struct {
	Level uint32
	At    int64 // unix ms
}

// Type implements Command.
func (*SetFeatures) Type() CommandType { return CmdSetFeatures }

func (c *SetFeatures) encode(e *encoder) { e.Uvarint(uint64(c.Level)); e.Varint(c.At) }
func (c *SetFeatures) decode(d *decoder) {
	l := d.Uvarint()
	if l > 1<<31 {
		d.Fail("feature level out of range")
	}
	c.Level = uint32(l)
	c.At = d.Varint()
}

// Command is one entry of the replicated log. Every field, including ids and timestamps, is
// filled in by the leader before proposing: Apply reads no clock and mints nothing.
type Command interface {
	Type() CommandType
	encode(e *encoder)
	decode(d *decoder)
	apply(f *FSM, index uint64) (Result, []string)
}

// Begin opens a transaction in status preparing. It is logged before any Prepare leaves the
// leader, so that a new leader knows every participant that may hold resources.
type Begin struct {
	ID           string
	Key          string // client idempotency key, "" for none
	CreatedAt    int64  // unix ms
	Deadline     int64  // unix ms, end of phase one
	Participants []Participant
	// Refs, when set, has one entry per participant: its index in the endpoint table
	// (see Define), or -1 to carry its URLs inline. A decoded Begin has the URLs of
	// referenced participants empty until Apply resolves them.
	Refs []int32
	// Payloads, when non-nil, has one entry per participant: the compact JSON text sent as
	// "payload" in its Prepare ("" for none). A Begin with non-nil Payloads is command type
	// CmdBeginPayloads (feature level 2); with nil Payloads it is type CmdBegin, the
	// encoding every build reads. The FSM keeps payloads until the decision is logged.
	Payloads []string
	// Trace, when set, is the W3C traceparent of the span that began the transaction
	// ("00-<32 hex trace id>-<16 hex span id>-<2 hex flags>", at most MaxTraceLen bytes):
	// a leader that resumes the transaction links its own span to it. A Begin with a
	// Trace is command type CmdBeginTraced (feature level 4); without, type 1 or 13.
	Trace string

	decodeTraced bool // set by Decode for a type-16 body, cleared once it is read
}

// MaxTraceLen bounds Begin.Trace (bytes): a traceparent is 55, and a longer value is not
// one the coordinator wrote.
const MaxTraceLen = 128

// Decide records the outcome of phase one with each participant's vote. The first Decide
// for a transaction wins; a later one with another decision is refused with ErrDecided.
type Decide struct {
	ID       string
	Decision Decision
	At       int64    // unix ms
	Votes    []Vote   // one per participant
	Reasons  []string // one per participant, "" for an ACK
}

// DecideCommit is Decide(commit) with every participant's vote yes, in about 20 bytes
// instead of 32: the common case needs neither votes nor reasons in the log, and its time
// is stored as ms after the transaction's CreatedAt. Apply treats it exactly as the
// equivalent Decide (the first decision wins).
type DecideCommit struct {
	ID      string
	AfterMs int64 // decision time minus CreatedAt, ms
}

// Type implements Command.
func (*DecideCommit) Type() CommandType { return CmdDecideCommit }

func (c *DecideCommit) encode(e *encoder) { e.id(c.ID); e.Varint(c.AfterMs) }
func (c *DecideCommit) decode(d *decoder) { c.ID = d.id(); c.AfterMs = d.Varint() }

// asDecide expands c against the record it names (under f.mu).
func (f *FSM) asDecide(c *DecideCommit) (*Decide, bool) {
	t, ok := f.txns[c.ID]
	if !ok {
		return nil, false
	}
	votes := make([]Vote, len(t.Participants))
	for i := range votes {
		votes[i] = VoteYes
	}
	return &Decide{ID: c.ID, Decision: DecisionCommit, At: t.CreatedAt + c.AfterMs, Votes: votes, Reasons: make([]string, len(votes))}, true
}

// Report is one participant's phase-two progress as the leader saw it.
type Report struct {
	Acked    bool
	Attempts uint32
	Error    string // last failure, "" when acknowledged
}

// Completion ends phase two of one transaction: every participant acknowledged.
type Completion struct {
	ID       string
	Attempts []uint32 // phase-two calls made, one per participant
}

// Complete moves each listed transaction from committing to committed or from rolling_back
// to rolled_back. Many completions share one entry so that phase-two bookkeeping costs
// less than one log entry per transaction under load. Items in another state are skipped.
type Complete struct {
	At    int64 // unix ms
	Items []Completion
}

// Fail marks a transaction whose phase two could not finish after the configured number of
// attempts as failed: a heuristic outcome that needs an operator. The decision stays.
type Fail struct {
	ID      string
	At      int64    // unix ms
	Reports []Report // one per participant
}

// Progress records phase-two attempts and errors without changing the status, so that a
// stuck transaction is visible from every node.
type Progress struct {
	ID      string
	Reports []Report // one per participant
}

// Retry is an operator action: a failed transaction goes back to committing or
// rolling_back (per its decision) and the leader drives phase two again.
type Retry struct {
	ID   string
	At   int64 // unix ms
	Note string
}

// Resolve is an operator action: a failed transaction is marked finished (committed or
// rolled_back, per its decision) after the operator settled it by hand. Note says how.
type Resolve struct {
	ID   string
	At   int64 // unix ms
	Note string
}

// Prune forgets committed and rolled_back transactions that finished before
// FinishedBefore, and idempotency keys created before KeysBefore (both unix ms; 0 keeps
// all). Failed transactions are never pruned.
type Prune struct {
	FinishedBefore int64
	KeysBefore     int64
}

// SetMember records a node's HTTP address so that any node can forward to the leader.
// An empty HTTPAddr removes the node.
type SetMember struct {
	NodeID   string
	HTTPAddr string
}

// Type implements Command: CmdBeginTraced when Trace is set, else CmdBeginPayloads when
// Payloads is non-nil, else CmdBegin.
func (c *Begin) Type() CommandType {
	if c.Trace != "" {
		return CmdBeginTraced
	}
	if c.Payloads != nil {
		return CmdBeginPayloads
	}
	return CmdBegin
}
func (*Decide) Type() CommandType    { return CmdDecide }
func (*Complete) Type() CommandType  { return CmdComplete }
func (*Fail) Type() CommandType      { return CmdFail }
func (*Progress) Type() CommandType  { return CmdProgress }
func (*Retry) Type() CommandType     { return CmdRetry }
func (*Resolve) Type() CommandType   { return CmdResolve }
func (*Prune) Type() CommandType     { return CmdPrune }
func (*SetMember) Type() CommandType { return CmdSetMember }

// Encode returns the log bytes of c: its type byte, then a compact body of varints and
// length-prefixed strings. Golden tests pin the format.
func Encode(c Command) []byte {
	e := encoder{codec.Encoder{B: make([]byte, 0, 192)}} // a 3-participant Begin with a key fits
	e.Byte(byte(c.Type()))
	c.encode(&e)
	return e.B
}

// Decode parses bytes written by Encode. It returns an error wrapping ErrCorrupt for an
// unknown type (also wrapping ErrUnknownCommand), a short or over-long body, or a length out
// of range; and ErrSkippable for an unknown type with the IgnoreUnknown bit.
func Decode(b []byte) (Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty command", ErrCorrupt)
	}
	t := CommandType(b[0])
	spec, ok := commandSpecs[t]
	if !ok {
		if t&IgnoreUnknown != 0 {
			return nil, fmt.Errorf("%w: %d", ErrSkippable, t)
		}
		return nil, fmt.Errorf("%w: %w %d", ErrCorrupt, ErrUnknownCommand, t)
	}
	c := spec.new()
	d := decoder{codec.NewDecoder(b[1:], ErrCorrupt)}
	c.decode(&d)
	if err := d.End(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Begin) encode(e *encoder) {
	e.id(c.ID)
	e.String(c.Key)
	e.Varint(c.CreatedAt)
	e.Varint(c.Deadline - c.CreatedAt) // a small delta instead of a second timestamp
	e.Uvarint(uint64(len(c.Participants)))
	for i, p := range c.Participants {
		if i < len(c.Refs) && c.Refs[i] >= 0 {
			e.Byte(participantRef)
			e.Uvarint(uint64(c.Refs[i]))
			continue
		}
		e.participant(p)
	}
	traced := c.Trace != ""
	if traced {
		// Type 16 is type 1's body, a flag saying whether payloads follow, the payloads
		// as in type 13, then the trace context.
		e.Bool(c.Payloads != nil)
	}
	if c.Payloads != nil {
		// One per participant, after them: type 13 is type 1's body plus this.
		for i := range c.Participants {
			pl := ""
			if i < len(c.Payloads) {
				pl = c.Payloads[i]
			}
			e.String(pl)
		}
	}
	if traced {
		e.trace(c.Trace)
	}
}

func (c *Begin) decode(d *decoder) {
	c.ID = d.id()
	c.Key = d.String()
	c.CreatedAt = d.Varint()
	c.Deadline = c.CreatedAt + d.Varint()
	n := d.Count(2)
	c.Participants = make([]Participant, 0, n)
	for i := 0; i < n && d.Err == nil; i++ {
		if len(d.B) > 0 && d.B[0] == participantRef {
			d.Byte()
			ref := d.Uvarint()
			if ref >= MaxEndpoints {
				d.Fail("endpoint reference out of range")
			}
			if c.Refs == nil {
				c.Refs = make([]int32, i, n)
				for j := range c.Refs {
					c.Refs[j] = -1
				}
			}
			c.Refs = append(c.Refs, int32(ref))
			c.Participants = append(c.Participants, Participant{})
			continue
		}
		if c.Refs != nil {
			c.Refs = append(c.Refs, -1)
		}
		c.Participants = append(c.Participants, d.participant())
	}
	traced := c.decodeTraced
	c.decodeTraced = false
	if traced && d.Bool() {
		c.Payloads = []string{}
	}
	if c.Payloads != nil { // type 13, or 14 with payloads
		c.Payloads = make([]string, 0, n)
		for i := 0; i < n && d.Err == nil; i++ {
			c.Payloads = append(c.Payloads, d.String())
		}
	}
	if traced {
		if c.Trace = d.trace(); c.Trace == "" && d.Err == nil {
			d.Fail("traced begin without a trace context")
		}
	}
}

func (c *Decide) encode(e *encoder) {
	e.id(c.ID)
	e.Byte(byte(c.Decision))
	e.Varint(c.At)
	e.votes(c.Votes, c.Reasons)
}

// votes writes one vote and reason per participant (Decide, and FastDecide's abort).
func (e *encoder) votes(votes []Vote, reasons []string) {
	e.Uvarint(uint64(len(votes)))
	for i, v := range votes {
		e.Byte(byte(v))
		reason := ""
		if i < len(reasons) {
			reason = reasons[i]
		}
		e.String(reason)
	}
}

// votes reads what encoder.votes wrote.
func (d *decoder) votes() ([]Vote, []string) {
	n := d.Count(2)
	votes, reasons := make([]Vote, n), make([]string, n)
	for i := 0; i < n && d.Err == nil; i++ {
		votes[i] = Vote(d.Byte())
		reasons[i] = d.String()
	}
	return votes, reasons
}

func (c *Decide) decode(d *decoder) {
	c.ID = d.id()
	c.Decision = Decision(d.Byte())
	c.At = d.Varint()
	c.Votes, c.Reasons = d.votes()
}

func (c *Complete) encode(e *encoder) {
	e.Varint(c.At)
	e.Uvarint(uint64(len(c.Items)))
	for _, it := range c.Items {
		e.id(it.ID)
		e.Uvarint(uint64(len(it.Attempts)))
		for _, a := range it.Attempts {
			e.Uvarint(uint64(a))
		}
	}
}

func (c *Complete) decode(d *decoder) {
	c.At = d.Varint()
	n := d.Count(3)
	c.Items = make([]Completion, n)
	for i := 0; i < n && d.Err == nil; i++ {
		c.Items[i].ID = d.id()
		m := d.Count(1)
		c.Items[i].Attempts = make([]uint32, m)
		for j := 0; j < m && d.Err == nil; j++ {
			c.Items[i].Attempts[j] = uint32(d.Uvarint())
		}
	}
}

func encodeReports(e *encoder, rs []Report) {
	e.Uvarint(uint64(len(rs)))
	for _, r := range rs {
		e.Bool(r.Acked)
		e.Uvarint(uint64(r.Attempts))
		e.String(r.Error)
	}
}

func decodeReports(d *decoder) []Report {
	n := d.Count(3)
	rs := make([]Report, n)
	for i := 0; i < n && d.Err == nil; i++ {
		rs[i] = Report{Acked: d.Bool(), Attempts: uint32(d.Uvarint()), Error: d.String()}
	}
	return rs
}

func (c *Fail) encode(e *encoder) {
	e.id(c.ID)
	e.Varint(c.At)
	encodeReports(e, c.Reports)
}

func (c *Fail) decode(d *decoder) {
	c.ID = d.id()
	c.At = d.Varint()
	c.Reports = decodeReports(d)
}

func (c *Progress) encode(e *encoder) {
	e.id(c.ID)
	encodeReports(e, c.Reports)
}

func (c *Progress) decode(d *decoder) {
	c.ID = d.id()
	c.Reports = decodeReports(d)
}

func (c *Retry) encode(e *encoder) { e.id(c.ID); e.Varint(c.At); e.String(c.Note) }
func (c *Retry) decode(d *decoder) { c.ID = d.id(); c.At = d.Varint(); c.Note = d.String() }

func (c *Resolve) encode(e *encoder) { e.id(c.ID); e.Varint(c.At); e.String(c.Note) }
func (c *Resolve) decode(d *decoder) { c.ID = d.id(); c.At = d.Varint(); c.Note = d.String() }

func (c *Prune) encode(e *encoder) { e.Varint(c.FinishedBefore); e.Varint(c.KeysBefore) }
func (c *Prune) decode(d *decoder) { c.FinishedBefore = d.Varint(); c.KeysBefore = d.Varint() }

func (c *SetMember) encode(e *encoder) { e.String(c.NodeID); e.String(c.HTTPAddr) }
func (c *SetMember) decode(d *decoder) { c.NodeID = d.String(); c.HTTPAddr = d.String() }

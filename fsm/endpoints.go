package fsm

// MaxEndpoints bounds the endpoint table. Past it, Define adds nothing and Begin carries
// participants' URLs inline, so hostile clients sending endless distinct URLs cannot grow the
// replicated state without bound (the table is never pruned).
const MaxEndpoints = 16384

// Define adds participants to the endpoint table, in order, each once. A Begin may then name
// a participant by its table index (Begin.Refs) instead of carrying three URLs: most
// transactions go to the same few services, so this is what keeps a Begin entry small.
type Define struct {
	Participants []Participant
}

// Type implements Command.
func (*Define) Type() CommandType { return CmdDefine }

func (c *Define) encode(e *encoder) {
	e.uvarint(uint64(len(c.Participants)))
	for _, p := range c.Participants {
		e.participant(p)
	}
}

func (c *Define) decode(d *decoder) {
	n := d.count(2)
	c.Participants = make([]Participant, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		c.Participants = append(c.Participants, d.participant())
	}
}

// applyDefine runs under f.mu.
func (f *FSM) applyDefine(c *Define) {
	for _, p := range c.Participants {
		if _, ok := f.endpointIdx[p]; ok || len(f.endpoints) >= MaxEndpoints {
			continue
		}
		f.endpointIdx[p] = uint32(len(f.endpoints))
		f.endpoints = append(f.endpoints, p)
	}
}

// EndpointRef returns p's index in the endpoint table, if it is there.
func (f *FSM) EndpointRef(p Participant) (uint32, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	i, ok := f.endpointIdx[p]
	return i, ok
}

// resolveRefs fills the participants a Begin names by table index. It runs under f.mu and
// returns false when an index is out of range (a command no correct leader writes).
func (f *FSM) resolveRefs(c *Begin) ([]Participant, bool) {
	if c.Refs == nil {
		return c.Participants, true
	}
	out := make([]Participant, len(c.Participants))
	for i, p := range c.Participants {
		if i < len(c.Refs) && c.Refs[i] >= 0 {
			if int(c.Refs[i]) >= len(f.endpoints) {
				return nil, false
			}
			out[i] = f.endpoints[c.Refs[i]]
			continue
		}
		out[i] = p
	}
	return out, true
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

func (c *DecideCommit) encode(e *encoder) { e.id(c.ID); e.varint(c.AfterMs) }
func (c *DecideCommit) decode(d *decoder) { c.ID = d.id(); c.AfterMs = d.varint() }

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

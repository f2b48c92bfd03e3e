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
	e.Uvarint(uint64(len(c.Participants)))
	for _, p := range c.Participants {
		e.participant(p)
	}
}

func (c *Define) decode(d *decoder) {
	n := d.Count(2)
	c.Participants = make([]Participant, 0, n)
	for i := 0; i < n && d.Err == nil; i++ {
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

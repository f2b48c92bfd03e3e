package fsm

// WatcherCount reports how many WaitFor calls are registered for id and how many ids have
// a watcher set at all. It exists only in the test binary, so that tests of package
// fsm_test can check that WaitFor leaves no watcher behind.
func (f *FSM) WatcherCount(id string) (forID, ids int) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return len(f.watchers[id]), len(f.watchers)
}

// CmdTestLevel1 is a command type that exists only in the test binary and needs feature
// level 1, so that the feature gate in Apply can be tested before a real level-1 type exists.
const CmdTestLevel1 CommandType = 0x7d

// TestLevel1 is the command of type CmdTestLevel1: it records a member, as SetMember does.
type TestLevel1 struct{ NodeID string }

func (*TestLevel1) Type() CommandType   { return CmdTestLevel1 }
func (c *TestLevel1) encode(e *encoder) { e.String(c.NodeID) }
func (c *TestLevel1) decode(d *decoder) { c.NodeID = d.String() }
func (c *TestLevel1) apply(f *FSM, _ uint64) (Result, []string) {
	f.members[c.NodeID] = "level-1"
	return Result{}, nil
}

func init() {
	commandSpecs[CmdTestLevel1] = commandSpec{new: func() Command { return new(TestLevel1) }, level: 1}
}

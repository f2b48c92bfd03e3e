package fsm

// WatcherCount reports how many WaitFor calls are registered for id and how many ids have
// a watcher set at all. It exists only in the test binary, so that tests of package
// fsm_test can check that WaitFor leaves no watcher behind.
func (f *FSM) WatcherCount(id string) (forID, ids int) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return len(f.watchers[id]), len(f.watchers)
}

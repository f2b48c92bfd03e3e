// Package goroutines dumps every goroutine's stack, for tests that log the state of a
// process when a condition they wait for does not come (a stall on a loaded CI machine is
// then diagnosable from the log alone).
package goroutines

import "runtime"

// Dump returns the stacks of all goroutines, as a panic prints them, however long.
func Dump() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

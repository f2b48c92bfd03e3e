//go:build !txcoord_v1

package main

import "github.com/txcoord/txcoord/fsm"

var define = func(ps []fsm.Participant) fsm.Command { return &fsm.Define{Participants: ps} }

// begin names participants the table holds by index, as the engine of these builds does.
func begin(id, key string, created, deadline int64, ps []fsm.Participant, refs []int32) *fsm.Begin {
	return &fsm.Begin{ID: id, Key: key, CreatedAt: created, Deadline: deadline, Participants: ps, Refs: refs}
}

//go:build txcoord_v1

package main

import "github.com/txcoord/txcoord/fsm"

// define is nil: build 769af25 has no endpoint table.
var define func([]fsm.Participant) fsm.Command

func begin(id, key string, created, deadline int64, ps []fsm.Participant, _ []int32) *fsm.Begin {
	return &fsm.Begin{ID: id, Key: key, CreatedAt: created, Deadline: deadline, Participants: ps}
}

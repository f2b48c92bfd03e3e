package httpapi

import (
	"errors"
	"fmt"
	"testing"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
)

// errorOf is the one mapping from engine, FSM and cluster errors to API errors: wrapped
// sentinels map to their code, retryable codes carry Retry-After, the rest fall back.
func TestErrorOf(t *testing.T) {
	for _, tc := range []struct {
		err      error
		fallback api.Code
		want     api.Code
	}{
		{fsm.ErrNotFound, codeInternal, codeNotFound},
		{cluster.ErrUnknownMember, codeUnavailable, codeNotFound},
		{coordinator.ErrNoteRequired, codeInternal, codeBadRequest},
		{cluster.ErrInvalidMember, codeUnavailable, codeBadRequest},
		{fsm.ErrBadTransition, codeInternal, codeConflict},
		{coordinator.ErrKeyReused, codeInternal, codeConflict},
		{cluster.ErrMemberConflict, codeUnavailable, codeConflict},
		{cluster.ErrBuildTooOld, codeUnavailable, codeConflict},
		{cluster.ErrUnreachable, codeUnavailable, codeConflict},
		{cluster.ErrFeatureUnavailable, codeInternal, codeFeature},
		{coordinator.ErrNotLeader, codeInternal, codeNoLeader},
		{cluster.ErrNotLeader, codeUnavailable, codeNoLeader},
		{coordinator.ErrBusy, codeInternal, codeBusy},
		{coordinator.ErrIndeterminate, codeInternal, codeIndeterminate},
		{errors.New("disk on fire"), codeInternal, codeInternal},
		{errors.New("raft: timed out"), codeUnavailable, codeUnavailable},
	} {
		e := errorOf(fmt.Errorf("wrapped: %w", tc.err), tc.fallback)
		if e.Code != tc.want {
			t.Errorf("%v: code %s, want %s", tc.err, e.Code, tc.want)
		}
		if (e.retryAfter != "") != tc.want.Retryable() {
			t.Errorf("%v: Retry-After %q for %s", tc.err, e.retryAfter, e.Code)
		}
	}
	pass := &apiError{Code: codeBadRequest, Detail: "x"}
	if errorOf(pass, codeInternal) != pass {
		t.Error("an *apiError is not passed through")
	}
}

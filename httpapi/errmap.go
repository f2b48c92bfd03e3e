package httpapi

import (
	"errors"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/fsm"
)

// errorOf is the one mapping from the errors of the engine, the FSM and the cluster to the
// API error a handler answers with. An *apiError passes through unchanged; an error it does
// not know becomes fallback (codeInternal for most routes; membership changes use
// codeUnavailable, since Raft's own errors there are transient) with Retry-After when the
// code is retryable. Handlers may then reword Detail for their route.
func errorOf(err error, fallback api.Code) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	e := &apiError{Code: fallback, Detail: err.Error()}
	switch {
	case errors.Is(err, fsm.ErrNotFound), errors.Is(err, cluster.ErrUnknownMember), errors.Is(err, coordinator.ErrNotKept):
		e.Code = codeNotFound
	case errors.Is(err, coordinator.ErrNoteRequired), errors.Is(err, cluster.ErrInvalidMember):
		e.Code = codeBadRequest
	case errors.Is(err, fsm.ErrBadTransition), errors.Is(err, coordinator.ErrKeyReused),
		errors.Is(err, cluster.ErrMemberConflict), errors.Is(err, cluster.ErrBuildTooOld), errors.Is(err, cluster.ErrUnreachable):
		e.Code = codeConflict
	case errors.Is(err, cluster.ErrFeatureUnavailable):
		e.Code = codeFeature
	case errors.Is(err, cluster.ErrFeaturePending):
		e.Code = codeUnavailable
	case errors.Is(err, coordinator.ErrNotLeader), errors.Is(err, cluster.ErrNotLeader):
		e.Code = codeNoLeader
	case errors.Is(err, coordinator.ErrBusy):
		e.Code = codeBusy
	case errors.Is(err, coordinator.ErrIndeterminate):
		e.Code = codeIndeterminate
	}
	if e.Code.Retryable() {
		e.retryAfter = "1"
	}
	return e
}

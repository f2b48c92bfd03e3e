package call

import (
	"context"
	"strconv"
)

type originKey struct{}

type fenceKey struct{}

// WithFence returns a context whose calls through Client first run fence, right before the
// request is written; an error from it refuses the call with a *CallError of kind
// KindFenced (NotSent set) and nothing is sent. The coordinator's fence confirms that the
// node still leads in the term the call belongs to (docs/failover.md, "Fencing").
func WithFence(ctx context.Context, fence func(ctx context.Context) error) context.Context {
	return context.WithValue(ctx, fenceKey{}, fence)
}

func fenceOf(ctx context.Context) func(context.Context) error {
	f, _ := ctx.Value(fenceKey{}).(func(context.Context) error)
	return f
}

type origin struct {
	node string
	term string
}

// WithOrigin returns a context whose calls through Client carry the NodeHeader and
// TermHeader of the leader that makes them.
func WithOrigin(ctx context.Context, node string, term uint64) context.Context {
	return context.WithValue(ctx, originKey{}, origin{node: node, term: strconv.FormatUint(term, 10)})
}

func originOf(ctx context.Context) (origin, bool) {
	o, ok := ctx.Value(originKey{}).(origin)
	return o, ok
}

package coordinator

// fastRun is one fast transaction between its first Prepare and its logged decision.
type fastRun struct {
	done chan struct{}
}

package chaos

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// leaderObs is a change in who leads, as the monitor saw it: Leader is "" while no node
// reports itself a ready leader.
type leaderObs struct {
	At     time.Time
	Leader string
	Term   uint64
}

// monitor polls GET /v1/cluster on every node every Poll and records leadership changes and
// the longest time without a ready leader.
type monitor struct {
	c    *Cluster
	poll time.Duration

	mu        sync.Mutex
	obs       []leaderObs // changes only
	lastSeen  time.Time   // last poll that saw a leader
	inGap     bool
	longest   time.Duration
	longestAt time.Time // when the longest gap began
	polls     int
	trace     io.Writer // leadership changes with every node's view, or nil
}

func newMonitor(c *Cluster, poll time.Duration) *monitor { return &monitor{c: c, poll: poll} }

// run polls until ctx ends.
func (m *monitor) run(ctx context.Context) {
	t := time.NewTicker(m.poll)
	defer t.Stop()
	for {
		m.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *monitor) sample(ctx context.Context) {
	var leader string
	var term uint64
	sts := m.c.statuses(ctx, 200*time.Millisecond)
	var seen []string
	for _, n := range m.c.Nodes {
		st, ok := sts[n]
		if !ok {
			seen = append(seen, n.ID+":-")
			continue
		}
		seen = append(seen, fmt.Sprintf("%s:%s/t%d/ready=%v/leader=%s", n.ID, st.Role, st.Term, st.Ready, st.LeaderID))
		if st.Role == "leader" && st.Ready && st.Term >= term {
			leader, term = n.ID, st.Term
		}
	}
	now := time.Now()
	if ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.polls++
	if len(m.obs) == 0 || m.obs[len(m.obs)-1].Leader != leader || m.obs[len(m.obs)-1].Term != term {
		m.obs = append(m.obs, leaderObs{At: now, Leader: leader, Term: term})
		if m.trace != nil {
			fmt.Fprintf(m.trace, "%s leader=%q term=%d  %s\n", now.Format("15:04:05.000"), leader, term, strings.Join(seen, " "))
		}
	}
	if leader == "" {
		if !m.lastSeen.IsZero() {
			m.inGap = true
		}
		return
	}
	if m.inGap {
		// The gap is counted from the last poll that saw a leader: an over-estimate by at
		// most one poll interval.
		if gap := now.Sub(m.lastSeen); gap > m.longest {
			m.longest, m.longestAt = gap, m.lastSeen
		}
		m.inGap = false
	}
	m.lastSeen = now
}

// newLeaderAfter returns when the monitor first saw a ready leader with a term above term
// after at, or false.
func (m *monitor) newLeaderAfter(at time.Time, term uint64) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.obs {
		if o.At.After(at) && o.Leader != "" && o.Term > term {
			return o.At, true
		}
	}
	return time.Time{}, false
}

// longestGap returns the longest time without a ready leader and when it began.
func (m *monitor) longestGap() (time.Duration, time.Time, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.longest, m.longestAt, m.polls
}

// leaderChanges counts the distinct leaderships seen.
func (m *monitor) leaderChanges() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, o := range m.obs {
		if o.Leader != "" {
			n++
		}
	}
	return n
}

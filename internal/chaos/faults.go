package chaos

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/txcoord/txcoord/internal/demo"
)

// The kinds of node fault the schedule injects.
const (
	FaultLeaderKill   = "leader-sigkill"   // SIGKILL the leader, restart it after a downtime
	FaultFollowerKill = "follower-sigkill" // SIGKILL one or more followers (a minority)
	FaultLeaderPause  = "leader-sigstop"   // SIGSTOP the leader for longer than the election timeout
	FaultRestartAll   = "restart-all"      // SIGKILL every node at once, start them all again
	FaultLeaderTerm   = "leader-sigterm"   // graceful shutdown of the leader (leadership transfer)
	// FaultLeaderSplit cuts the leader from every other node's Raft traffic (both ways) for
	// 2-8 election timeouts, then heals: the majority elects a successor while the old
	// leader, still running and serving HTTP, steps down after its lease. Config.Partitions.
	FaultLeaderSplit = "leader-partition"
	// FaultFollowerSplit cuts one follower the same way: it times out and asks for votes no
	// one can hear; on heal pre-vote (docs/failover.md) should keep it from deposing a
	// healthy leader, and it catches up from the leader. Config.Partitions.
	FaultFollowerSplit = "follower-partition"
)

// kill is one injected node fault that took a leader down (or all nodes).
type kill struct {
	Kind string
	At   time.Time
	Node string // the leader at the time
	Term uint64 // its term
}

// scheduler runs the node fault schedule on a seeded random source.
type scheduler struct {
	c   *Cluster
	cfg Config
	rng *rand.Rand
	ev  *eventLog

	mu     sync.Mutex
	kills  []kill
	counts map[string]int
}

func newScheduler(c *Cluster, cfg Config, ev *eventLog) *scheduler {
	return &scheduler{c: c, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed)), ev: ev, counts: map[string]int{}}
}

func (s *scheduler) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

func (s *scheduler) sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (s *scheduler) count(kind string) {
	s.mu.Lock()
	s.counts[kind]++
	s.mu.Unlock()
}

func (s *scheduler) recordKill(k kill) {
	s.mu.Lock()
	s.kills = append(s.kills, k)
	s.mu.Unlock()
}

func (s *scheduler) results() ([]kill, map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := map[string]int{}
	for k, v := range s.counts {
		counts[k] = v
	}
	return append([]kill(nil), s.kills...), counts
}

// pick chooses the next fault: a leader SIGKILL whenever the run is behind its
// MinLeaderKills pace, else by weight.
func (s *scheduler) pick(start, end time.Time) string {
	s.mu.Lock()
	done := s.counts[FaultLeaderKill]
	splits := s.counts[FaultLeaderSplit] + s.counts[FaultFollowerSplit]
	s.mu.Unlock()
	frac := float64(time.Since(start)) / float64(end.Sub(start))
	if s.cfg.MinLeaderKills > 0 {
		if float64(done) < frac*float64(s.cfg.MinLeaderKills)*1.2+1 {
			return FaultLeaderKill
		}
	}
	// Partitions are forced from a third of the run on when behind their pace (after the
	// leader kills, which keep their own pace).
	if s.cfg.Partitions && s.cfg.MinPartitions > 0 && frac > 1.0/3 &&
		splits < min(s.cfg.MinPartitions, int(math.Ceil((frac-1.0/3)*1.5*float64(s.cfg.MinPartitions)))) {
		return FaultLeaderSplit
	}
	r := s.rng.Float64()
	if s.cfg.Partitions {
		switch {
		case r < 0.12:
			return FaultLeaderSplit
		case r < 0.17:
			return FaultFollowerSplit
		}
		r = (r - 0.17) / 0.83 // the rest, by the weights below
	}
	switch {
	case r < 0.55:
		return FaultLeaderKill
	case r < 0.70:
		return FaultFollowerKill
	case r < 0.83:
		return FaultLeaderPause
	case r < 0.93:
		return FaultRestartAll
	default:
		return FaultLeaderTerm
	}
}

// run injects node faults until end, one at a time: each waits for a ready leader with
// every node up, a random pause, then the fault and its repair. It heals everything before
// it returns.
func (s *scheduler) run(ctx context.Context, end time.Time) {
	start := time.Now()
	defer func() {
		if err := s.c.HealAll(); err != nil {
			s.ev.add(time.Now(), "heal-error", "", "%v", err)
		}
	}()
	for ctx.Err() == nil && time.Now().Before(end) {
		if err := s.c.HealAll(); err != nil {
			s.ev.add(time.Now(), "heal-error", "", "%v", err)
		}
		if _, _, err := s.c.WaitLeader(ctx, 20*time.Second); err != nil {
			s.ev.add(time.Now(), "no-leader", "", "%v", err)
			continue
		}
		s.sleep(ctx, s.between(s.cfg.FaultGapMin, s.cfg.FaultGapMax))
		if ctx.Err() != nil || !time.Now().Before(end) {
			return
		}
		leader, st, ok := s.c.Leader(ctx)
		if !ok {
			continue
		}
		et := s.cfg.ElectionTimeout
		switch kind := s.pick(start, end); kind {
		case FaultLeaderKill:
			at := time.Now()
			_ = s.c.Kill(leader)
			s.count(kind)
			s.recordKill(kill{Kind: kind, At: at, Node: leader.ID, Term: st.Term})
			down := s.between(s.cfg.DowntimeMin, s.cfg.DowntimeMax)
			s.ev.add(at, kind, leader.ID, "term %d; restart in %s", st.Term, down.Round(time.Millisecond))
			s.sleep(ctx, down)
			_ = s.c.Restart(leader)
		case FaultFollowerKill:
			var followers []*Node
			for _, n := range s.c.Nodes {
				if n != leader {
					followers = append(followers, n)
				}
			}
			s.rng.Shuffle(len(followers), func(i, j int) { followers[i], followers[j] = followers[j], followers[i] })
			k := 1 + s.rng.IntN(max(1, (len(s.c.Nodes)-1)/2))
			down := s.between(s.cfg.DowntimeMin, 2*s.cfg.DowntimeMax)
			for _, n := range followers[:k] {
				_ = s.c.Kill(n)
				s.count(kind)
				s.ev.add(time.Now(), kind, n.ID, "restart in %s", down.Round(time.Millisecond))
			}
			s.sleep(ctx, down)
			for _, n := range followers[:k] {
				_ = s.c.Restart(n)
			}
		case FaultLeaderPause:
			at := time.Now()
			_ = s.c.Pause(leader)
			s.count(kind)
			s.recordKill(kill{Kind: kind, At: at, Node: leader.ID, Term: st.Term})
			d := s.between(2*et, 5*et)
			s.ev.add(at, kind, leader.ID, "term %d; SIGCONT in %s", st.Term, d.Round(time.Millisecond))
			s.sleep(ctx, d)
			_ = s.c.Resume(leader)
		case FaultRestartAll:
			at := time.Now()
			var wg sync.WaitGroup
			for _, n := range s.c.Nodes {
				wg.Add(1)
				go func() { defer wg.Done(); _ = s.c.Kill(n) }()
			}
			wg.Wait()
			s.count(kind)
			s.recordKill(kill{Kind: kind, At: at, Node: leader.ID, Term: st.Term})
			down := s.between(s.cfg.DowntimeMin, s.cfg.DowntimeMax)
			s.ev.add(at, kind, "all", "term %d; start all in %s", st.Term, down.Round(time.Millisecond))
			s.sleep(ctx, down)
			for _, n := range s.c.Nodes {
				_ = s.c.Restart(n)
			}
		case FaultLeaderSplit, FaultFollowerSplit:
			victim := leader
			if kind == FaultFollowerSplit {
				var followers []*Node
				for _, n := range s.c.Nodes {
					if n != leader {
						followers = append(followers, n)
					}
				}
				victim = followers[s.rng.IntN(len(followers))]
			}
			d := s.between(2*et, 8*et)
			at := time.Now()
			if err := s.c.Isolate(victim); err != nil {
				s.ev.add(at, "partition-error", victim.ID, "%v", err)
				continue
			}
			s.count(kind)
			if kind == FaultLeaderSplit {
				s.recordKill(kill{Kind: kind, At: at, Node: victim.ID, Term: st.Term})
			}
			s.ev.add(at, kind, victim.ID, "term %d (leader %s); heal in %s", st.Term, leader.ID, d.Round(time.Millisecond))
			s.sleep(ctx, d)
			s.c.Heal(victim)
			s.ev.add(time.Now(), "partition-healed", victim.ID, "")
		case FaultLeaderTerm:
			at := time.Now()
			s.count(kind)
			s.recordKill(kill{Kind: kind, At: at, Node: leader.ID, Term: st.Term})
			clean := leader.proc.terminate(10 * time.Second)
			s.ev.add(at, kind, leader.ID, "term %d; exited cleanly: %v after %s", st.Term, clean, time.Since(at).Round(time.Millisecond))
			s.sleep(ctx, s.between(s.cfg.DowntimeMin, s.cfg.DowntimeMax))
			_ = s.c.Restart(leader)
		}
	}
}

// participantFaults makes participants slow or failing on a seeded schedule until end,
// then clears every knob.
func participantFaults(ctx context.Context, c *Cluster, cfg Config, ev *eventLog, end time.Time) {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0xfa17))
	defer func() {
		if err := c.ClearFaults(context.WithoutCancel(ctx)); err != nil {
			ev.add(time.Now(), "knob-error", "", "%v", err)
		}
	}()
	for ctx.Err() == nil {
		d := time.Duration(2000+rng.IntN(3000)) * time.Millisecond
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(d, time.Until(end))):
		}
		if !time.Now().Before(end) {
			return
		}
		if rng.Float64() < 0.35 {
			_ = c.ClearFaults(ctx)
			ev.add(time.Now(), "knobs-cleared", "", "every participant healthy")
			continue
		}
		p := c.Parts[rng.IntN(len(c.Parts))]
		var f demo.Faults
		for range 1 + rng.IntN(2) {
			switch rng.IntN(4) {
			case 0:
				f.NackRate = float64(rng.IntN(31)) / 100
			case 1:
				f.DelayMS = rng.Int64N(cfg.TxnTimeout.Milliseconds()/4 + 1)
			case 2:
				f.ErrorRate = float64(rng.IntN(41)) / 100
			case 3:
				f.DropRate = float64(rng.IntN(31)) / 100
			}
		}
		if err := c.SetFaults(ctx, p, f); err != nil {
			ev.add(time.Now(), "knob-error", "", "%s: %v", p.Kind, err)
			continue
		}
		ev.add(time.Now(), "knobs", "", "%s nack=%.2f delay=%dms error=%.2f drop=%.2f", p.Kind, f.NackRate, f.DelayMS, f.ErrorRate, f.DropRate)
	}
}

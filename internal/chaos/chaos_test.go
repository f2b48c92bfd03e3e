package chaos

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

// envDuration reads a duration (e.g. "2m", or plain seconds) from the environment.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	if d, err := time.ParseDuration(v); err == nil {
		return d
	}
	if s, err := strconv.Atoi(v); err == nil {
		return time.Duration(s) * time.Second
	}
	t.Fatalf("%s=%q: want a duration like 2m or a number of seconds", name, v)
	return 0
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: want an integer", name, v)
	}
	return n
}

// TestChaos is the process-level chaos run (issue 4, item 5). It runs only with
// TXCOORD_CHAOS set:
//
//	TXCOORD_CHAOS=1 go test -run 'TestChaos$' -v -timeout 30m ./internal/chaos
//
// TXCOORD_CHAOS_DURATION (default 2m), TXCOORD_CHAOS_SEED (default: the time, printed),
// TXCOORD_CHAOS_NODES (3; 5 for the 5-node variant), TXCOORD_CHAOS_CLIENTS (8),
// TXCOORD_CHAOS_RATE (requests/s, 60), TXCOORD_CHAOS_MIN_LEADER_KILLS (20 for a 2-minute
// run, pro rata for shorter ones), TXCOORD_CHAOS_HEARTBEAT, _ELECTION, _LEASE (Raft
// timeouts, 300ms, 300ms, 150ms). TXCOORD_CHAOS_BIN runs a prebuilt binary instead of
// building ./cmd/txcoord. It fails on any violation or too few leader kills.
func TestChaos(t *testing.T) {
	if os.Getenv("TXCOORD_CHAOS") == "" {
		t.Skip("set TXCOORD_CHAOS=1 to run the chaos harness (see scripts/chaos.sh)")
	}
	dur := envDuration(t, "TXCOORD_CHAOS_DURATION", 2*time.Minute)
	seed := uint64(time.Now().UnixNano() % 1_000_000_000)
	if v := os.Getenv("TXCOORD_CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TXCOORD_CHAOS_SEED=%q: %v", v, err)
		}
		seed = s
	}
	minKills := envInt(t, "TXCOORD_CHAOS_MIN_LEADER_KILLS", min(20, int(dur/(6*time.Second))))
	cfg := Config{
		Nodes:          envInt(t, "TXCOORD_CHAOS_NODES", 3),
		Duration:       dur,
		Seed:           seed,
		Clients:        envInt(t, "TXCOORD_CHAOS_CLIENTS", 8),
		Rate:           float64(envInt(t, "TXCOORD_CHAOS_RATE", 60)),
		MinLeaderKills: minKills,
		// Network partitions (issue 17, item 4): at least one a minute.
		Partitions:    true,
		MinPartitions: max(1, int(dur/time.Minute)),
		Out:           os.Stdout,
		// Raft timing (issue 4, item 6): the harness's fast defaults are 300ms/300ms/150ms.
		HeartbeatTimeout: envDuration(t, "TXCOORD_CHAOS_HEARTBEAT", 0),
		ElectionTimeout:  envDuration(t, "TXCOORD_CHAOS_ELECTION", 0),
		LeaderLease:      envDuration(t, "TXCOORD_CHAOS_LEASE", 0),
		Mode:             os.Getenv("TXCOORD_CHAOS_MODE"),
	}
	if cfg.Mode != "" && cfg.Mode != "default" && cfg.Mode != "fast" {
		t.Fatalf("TXCOORD_CHAOS_MODE=%q: want default or fast", cfg.Mode)
	}
	t.Logf("chaos seed %d (TXCOORD_CHAOS_SEED=%d reproduces the schedule)", seed, seed)
	ctx, cancel := context.WithTimeout(context.Background(), dur+10*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("seed %d: harness: %v", seed, err)
	}
	for _, v := range res.Violations {
		t.Errorf("seed %d: %s", seed, v)
	}
	if res.LeaderKills < minKills {
		t.Errorf("seed %d: only %d leader kills, want at least %d", seed, res.LeaderKills, minKills)
	}
	if t.Failed() {
		t.Logf("seed %d failed; logs kept in %s", seed, res.Dir)
	}
}

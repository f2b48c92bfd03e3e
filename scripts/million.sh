#!/usr/bin/env bash
# The long-run size test of issues 5 and 18: N transactions (default 1,000,000) through
# three `txcoord serve` processes on loopback, then each node's data directory size and
# resident memory, then one node restarted and timed until /readyz answers 200, then every
# transaction looked up on every node (scripts/lookup: the state, or the archive for the
# ones retention pruned beyond the newest 100,000), with each node's archive bytes per
# transaction. It exits non-zero when a lookup fails.
#   scripts/million.sh [count] [concurrency]
# Everything runs on loopback and stops by itself; all processes are killed on exit.
set -euo pipefail
count=${1:-1000000}
conc=${2:-64}
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/txcoord-million.XXXXXX)
bin=$work/txcoord
CGO_ENABLED=0 go build -o "$bin" ./cmd/txcoord
CGO_ENABLED=0 go build -o "$work/lookup" ./scripts/lookup
started=$(date +%s)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
peers=n1=127.0.0.1:7401@127.0.0.1:8401,n2=127.0.0.1:7402@127.0.0.1:8402,n3=127.0.0.1:7403@127.0.0.1:8403
start() { # start node i
  "$bin" serve --node-id "n$1" --http-addr "127.0.0.1:840$1" --raft-addr "127.0.0.1:740$1" \
    --data-dir "$work/n$1" --peers "$peers" --log-level warn 2>>"$work/n$1.log" &
  pids[$1]=$!
}
ready() { # wait until node i answers /readyz 200; prints the seconds it took
  local t0; t0=$(date +%s.%N)
  for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:840$1/readyz" >/dev/null; then
      awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }'; return 0
    fi
    sleep 0.05
  done
  echo "node n$1 not ready after 30 s" >&2; return 1
}
for i in 1 2 3; do start $i; done
"$bin" bench-participant --listen 127.0.0.1:9401 >"$work/participants.log" 2>&1 &
pids[4]=$!
for i in 1 2 3; do ready $i >/dev/null; done
# One bench run is capped at 10 minutes, so the count is sent in rounds of at most 200,000.
left=$count
while [ "$left" -gt 0 ]; do
  n=$(( left < 200000 ? left : 200000 ))
  "$bin" bench --node http://127.0.0.1:8401,http://127.0.0.1:8402,http://127.0.0.1:8403 \
    --participant http://127.0.0.1:9401/p1/prepare --participant http://127.0.0.1:9402/p2/prepare \
    --participant http://127.0.0.1:9403/p3/prepare \
    --concurrency "$conc" --count "$n" --duration 0 --warmup 0 --quiet | grep -E "^Concurrency|errors:"
  left=$(( left - n ))
done
echo "after $count transactions:"
for i in 1 2 3; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/${pids[$i]}/status")
  size=$(du -sk "$work/n$i" | cut -f1)
  awk -v i="$i" -v s="$size" -v r="$rss" 'BEGIN { printf "  n%d: data dir %.1f MiB, resident memory %.1f MiB\n", i, s/1024, r/1024 }'
done
leader=$(curl -s http://127.0.0.1:8401/v1/cluster | sed -n 's/.*"leaderId":"n\([0-9]\)".*/\1/p')
victim=$(( leader % 3 + 1 ))
kill "${pids[$victim]}"; wait "${pids[$victim]}" 2>/dev/null || true
start "$victim"
echo "  n$victim restarted: ready (serving) after $(ready "$victim") s"
ready "$victim" >/dev/null
"$work/lookup" -nodes http://127.0.0.1:8401,http://127.0.0.1:8402,http://127.0.0.1:8403 -expect "$count"
echo "total $(( $(date +%s) - started )) s"

#!/usr/bin/env bash
# Chaos run of txcoord on real processes (issue 4): builds the binary, starts the coordinator
# nodes and the demo participants on loopback, kills/pauses leaders under load on a printed
# seed, then checks every oracle (O1-O5, atomicity checker, client answers) and prints a
# report. Exit status 0 only with 0 violations and enough leader kills.
#
#   scripts/chaos.sh [duration] [seed]       e.g. scripts/chaos.sh 2m 12345
#
# Environment (all optional): NODES (3; 5 for the 5-node variant), CLIENTS (8), RATE
# (requests/s, 60), MIN_LEADER_KILLS (20 for 2m, pro rata for shorter runs), C04=1 to run the
# C04 kill-point matrix first, KEEP=1 to keep the run directory, TXCOORD_CHAOS_BIN to run a
# prebuilt binary, HEARTBEAT/ELECTION/LEASE the Raft timeouts (300ms/300ms/150ms), MODE=fast
# to run every transaction in fast mode (issue 17; the demo participants inquire).
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-2m}"
seed="${2:-$(( $(date +%s) % 1000000000 ))}"
export TXCOORD_CHAOS=1 TXCOORD_CHAOS_DURATION="$duration" TXCOORD_CHAOS_SEED="$seed"
export TXCOORD_CHAOS_NODES="${NODES:-3}" TXCOORD_CHAOS_CLIENTS="${CLIENTS:-8}" TXCOORD_CHAOS_RATE="${RATE:-60}"
[ -n "${MIN_LEADER_KILLS:-}" ] && export TXCOORD_CHAOS_MIN_LEADER_KILLS="$MIN_LEADER_KILLS"
[ -n "${KEEP:-}" ] && export TXCOORD_CHAOS_KEEP=1
[ -n "${HEARTBEAT:-}" ] && export TXCOORD_CHAOS_HEARTBEAT="$HEARTBEAT"
[ -n "${ELECTION:-}" ] && export TXCOORD_CHAOS_ELECTION="$ELECTION"
[ -n "${LEASE:-}" ] && export TXCOORD_CHAOS_LEASE="$LEASE"
[ -n "${MODE:-}" ] && export TXCOORD_CHAOS_MODE="$MODE"
echo "chaos: duration $duration, seed $seed, ${TXCOORD_CHAOS_NODES} nodes, mode ${MODE:-default} (rerun: ${MODE:+MODE=$MODE }scripts/chaos.sh $duration $seed)"
if [ -n "${C04:-}" ]; then
  go test -count=1 -v -timeout 20m -run 'TestC04_' ./internal/chaos
fi
exec go test -count=1 -v -timeout 120m -run 'TestChaos$' ./internal/chaos

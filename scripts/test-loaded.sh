#!/usr/bin/env bash
# The race test suite once more with the CPU saturated (issue 12): stress-ng keeps one CPU
# worker per core busy, bounded by a timeout, while the packages whose tests run clusters,
# elections and deadlines run with the race detector. A test that passes only on an idle
# machine fails here; fix it by asserting the property with generous bounds, never by
# sleeping. Usage: scripts/test-loaded.sh [packages...].
#
# By default: httpapi and coordinator whole, and the server and cluster tests that run
# clusters through elections, failover, faults and shutdown (LOADED_SERVER_TESTS,
# LOADED_SHORT_TESTS run with -short,
# LOADED_CLUSTER_TESTS): the whole server suite took over 20 minutes loaded, so the lists
# are targeted to keep the run within about 8 minutes. Tests once excluded here and back
# (issue 12): TestAtomicityUnderParticipantFaults (a 503 during an election counted as a
# failure; it now retries with the Idempotency-Key, as a client does),
# TestSkewedNodeNeverLeads (hung in raft's Shutdown; a stop is now bounded, see
# cluster.ErrShutdownAbandoned and TestStopReturnsWhenRaftShutdownIsStuck),
# TestFailoverDuringPhaseTwo (asserted exact terms) and cluster's
# TestFormationRestartedNodeNeverBootstraps (its nodes' stops, on a transport the test
# gave, did not get the grace-period transport close; now they do), and
# TestDataDirStopsGrowing (back since the third session): the follower that once applied
# nothing for 60 s here was hashicorp/raft#697 (a deposed leader's uncommitted suffix kept
# across InstallSnapshot; the leader now repairs it: cluster/stall.go, docs/failover.md),
# reproduced by TestDeposedLeaderWithDivergentSuffixCatchesUp; the test itself now accepts
# 202 and prunes the keys followers mint. 64 of 64 loaded race runs passed after that.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=("$@")
server_tests="${LOADED_SERVER_TESTS:-^(TestC07_ReplayIsSilent|TestPostDuringLeadershipTransfersIsBounded|TestRemovedNodeAnswers503AtOnce|TestFailover.*|TestClusterCommitsThroughLeaderAndFollower|TestTracesOverOTLP|TestSkewedNodeNeverLeads|TestDataDirStopsGrowing)$}"
# -short: the same faults and checker over 200 transactions instead of 1,000 (make test runs
# the 1,000; loaded they took 100 s here).
short_tests="${LOADED_SHORT_TESTS:-^(TestAtomicityUnderParticipantFaults)$}"
cluster_tests="${LOADED_CLUSTER_TESTS:-^(TestLeaderWhoseLogWritesFailStepsDownAndStaysOut|TestDamaged.*|TestGarbage.*|TestFormationRestartedNodeNeverBootstraps|TestStopReturnsWhenRaftShutdownIsStuck|TestDeposedLeaderWithDivergentSuffixCatchesUp|TestRemovePeerBackToBackThroughAnElection)$}"
default=0
[ ${#pkgs[@]} -gt 0 ] || { pkgs=(./httpapi/... ./coordinator/...); default=1; }
if ! command -v stress-ng >/dev/null; then
  apt-get update -qq && apt-get install -y -qq stress-ng >/dev/null
fi
cores=$(nproc)
go test -race -count=1 -run '^$' "${pkgs[@]}" ./server/ ./cluster/ >/dev/null # build first, unloaded
stress-ng --cpu "$cores" --cpu-method matrixprod --timeout "${LOAD_TIMEOUT:-1200s}" --quiet &
load=$!
trap 'kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true' EXIT
start=$(date +%s)
echo "loaded run: stress-ng --cpu $cores (pid $load) while go test -race ${pkgs[*]}"
go test -race -count=1 -timeout 20m "${pkgs[@]}"
if [ "$default" = 1 ]; then
  go test -race -count=1 -timeout 15m -run "$server_tests" ./server/
  go test -race -count=1 -timeout 10m -short -run "$short_tests" ./server/
  go test -race -count=1 -timeout 10m -run "$cluster_tests" ./cluster/
fi
echo "loaded run took $(( $(date +%s) - start )) s"

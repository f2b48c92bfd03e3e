#!/usr/bin/env bash
# The race test suite once more with the CPU saturated (issue 12): stress-ng keeps one CPU
# worker per core busy, bounded by a timeout, while the packages whose tests run clusters,
# elections and deadlines run with the race detector. A test that passes only on an idle
# machine fails here; fix it by asserting the property with generous bounds, never by
# sleeping. Usage: scripts/test-loaded.sh [packages...] (default: the cluster-level ones).
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./server/... ./cluster/... ./httpapi/... ./coordinator/...)
if ! command -v stress-ng >/dev/null; then
  apt-get update -qq && apt-get install -y -qq stress-ng >/dev/null
fi
cores=$(nproc)
go test -race -count=1 -run '^$' "${pkgs[@]}" >/dev/null # build first, unloaded
stress-ng --cpu "$cores" --cpu-method matrixprod --timeout "${LOAD_TIMEOUT:-1200s}" --quiet &
load=$!
trap 'kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true' EXIT
start=$(date +%s)
echo "loaded run: stress-ng --cpu $cores (pid $load) while go test -race ${pkgs[*]}"
go test -race -count=1 -timeout 20m "${pkgs[@]}"
echo "loaded run took $(( $(date +%s) - start )) s"

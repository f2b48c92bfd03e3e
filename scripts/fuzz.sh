#!/usr/bin/env bash
# Runs every fuzz target briefly (CI: .ci/run; issue 8). A finding fails the run and leaves
# its input under the package's testdata/fuzz/<Target>/: commit it as a regression test
# once fixed.   scripts/fuzz.sh [BUDGET]   (default 100000x: executions per target)
# The budget is a count, not a duration: with a duration, Go before 1.27 can fail a target
# with a bare "context deadline exceeded" when the time runs out mid-execution
# (golang/go#75804), a coordinator race and not a finding. A duration (e.g. 60s) still works
# for longer runs by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-100000x}
# Every `func FuzzX(` in a _test.go file, with its package directory.
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
  for name in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
    echo "-- fuzz $(dirname "$f") $name ($t)"
    go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$(dirname "$f")" </dev/null
  done
done

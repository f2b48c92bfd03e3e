#!/usr/bin/env bash
# Runs every fuzz target for a short time (CI: .ci/run; issue 8). A finding fails the run
# and leaves its input under the package's testdata/fuzz/<Target>/: commit it as a
# regression test once fixed.   scripts/fuzz.sh [DURATION]   (default 10s per target)
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
# Every `func FuzzX(` in a _test.go file, with its package directory.
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
  for name in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
    echo "-- fuzz $(dirname "$f") $name ($t)"
    go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$(dirname "$f")" </dev/null
  done
done

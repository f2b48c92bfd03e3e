#!/usr/bin/env bash
# The participant conformance kit (issue 15) against the Python example participant
# (examples/python-participant, standard library only) and a demo service
# (`txcoord participant`), each on a free loopback port. Needs bin/txcoord (make build).
# Both inquire (docs/participant-protocol.md, "Inquiry"), so both are checked with --fast:
# a participant that does not ask fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin/txcoord
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

# start NAME CMD...: runs CMD (which prints its prepare URL on its first line) and waits for it.
start() {
  local name=$1; shift
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
  for _ in $(seq 100); do
    url=$(grep -o 'http://[^ ]*/prepare' "$tmp/$name.out" 2>/dev/null | head -1 || true)
    [ -n "$url" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name did not start:"; cat "$tmp/$name.err"; return 1
}

start python python3 examples/python-participant/participant.py --listen 127.0.0.1:0 --state "$tmp/seats.json"
echo "-- Python example at $url"; "$bin" participant-check --fast --prepare "$url"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start demo "$bin" participant --kind hotel --listen "127.0.0.1:$port" --data-dir "$tmp/hotel"
echo "-- demo hotel service at $url"; "$bin" participant-check --fast --prepare "$url"

#!/usr/bin/env python3
"""A txcoord participant in Python, standard library only (docs/participant-protocol.md).

It sells seats from a fixed stock. Prepare holds one seat, Commit sells it, Rollback frees
it. Every decision is written to a JSON file before the answer goes out, so a restart keeps
votes and tombstones:

  - a repeated Prepare gets the same vote;
  - Commit and Rollback of a finished transaction are ACKed without doing anything again;
  - Rollback of a transaction never prepared is ACKed and leaves a tombstone, and a later
    Prepare for it is refused with NACK (case C02);
  - Commit of a transaction never prepared is refused with NACK;
  - inquiry: a prepared transaction still without Commit or Rollback --grace seconds past
    its deadline is asked about at the Prepare's "inquiry" URLs,
    GET {url}/v1/transactions/{id}/outcome?deadline=..., one node after the other with
    capped exponential backoff and jitter, until the answer is committed or rolled_back,
    which is then applied exactly as the Commit or Rollback call (the same code, under the
    same lock). Any other answer is ignored (docs/participant-protocol.md, "Inquiry").

Run:  python3 participant.py --listen 127.0.0.1:9101 --state /tmp/seats.json --seats 100
Its prepare URL is then http://127.0.0.1:9101/prepare. Check it with
      txcoord participant-check --prepare http://127.0.0.1:9101/prepare
"""

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 64 * 1024
MAX_ANSWER = 64 * 1024


class Store:
    """Transactions by id: {"state": "prepared"|"committed"|"rolled_back"|"refused", ...}."""

    def __init__(self, path, seats):
        self.path, self.lock = path, threading.Lock()
        self.data = {"free": seats, "sold": 0, "txns": {}}
        if path and os.path.exists(path):
            with open(path) as f:
                self.data = json.load(f)

    def save(self):
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def prepare(self, tid, deadline="", inquiry=()):
        t = self.data["txns"].get(tid)
        if t is not None:  # repeated Prepare: the same vote
            if t["state"] in ("prepared", "committed"):
                return {"status": "ACK"}
            return {"status": "NACK", "reason": t.get("reason", "already rolled back")}
        if self.data["free"] < 1:
            self.data["txns"][tid] = {"state": "refused", "reason": "no seats left"}
            self.save()
            return {"status": "NACK", "reason": "no seats left"}
        self.data["free"] -= 1
        self.data["txns"][tid] = {"state": "prepared", "deadline": deadline, "inquiry": list(inquiry)}
        self.save()
        return {"status": "ACK"}

    def commit(self, tid):
        t = self.data["txns"].get(tid)
        if t is None or t["state"] in ("refused",):
            return {"status": "NACK", "reason": "never prepared here"}
        if t["state"] == "rolled_back":
            return {"status": "NACK", "reason": "already rolled back"}
        if t["state"] == "prepared":
            t["state"] = "committed"
            t.pop("inquiry", None)
            self.data["sold"] += 1
            self.save()
        return {"status": "ACK"}

    def rollback(self, tid):
        t = self.data["txns"].get(tid)
        if t is None:  # never prepared: tombstone
            self.data["txns"][tid] = {"state": "rolled_back", "reason": "already rolled back (tombstone)"}
            self.save()
            return {"status": "ACK"}
        if t["state"] == "committed":
            return {"status": "NACK", "reason": "already committed"}
        if t["state"] == "prepared":
            self.data["free"] += 1
        if t["state"] != "rolled_back":
            t["state"], t["reason"] = "rolled_back", "already rolled back"
            t.pop("inquiry", None)
            self.save()
        return {"status": "ACK"}


def parse_deadline(s):
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def ask(base, tid, deadline, timeout=10):
    """One inquiry: returns (outcome or None, Retry-After seconds)."""
    url = base.rstrip("/") + "/v1/transactions/" + urllib.parse.quote(tid, safe="") + "/outcome"
    if deadline:
        url += "?deadline=" + urllib.parse.quote(deadline)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/json"}), timeout=timeout) as r:
            body, retry = r.read(MAX_ANSWER + 1), r.headers.get("Retry-After")
    except urllib.error.HTTPError as e:
        return None, e.headers.get("Retry-After")
    except (OSError, ValueError):
        return None, None
    if len(body) > MAX_ANSWER:
        return None, retry
    try:
        a = json.loads(body)
    except ValueError:
        return None, retry
    if not isinstance(a, dict) or a.get("transactionId") != tid:
        return None, retry
    if a.get("outcome") not in ("committed", "rolled_back", "pending"):
        return None, retry
    return a["outcome"], retry


def inquirer(store, grace, stop):
    """Asks about prepared transactions held past deadline + grace, and applies the answer."""
    sched = {}  # tid -> [next time, attempt, node index]
    while not stop.wait(0.2):
        now = time.time()
        with store.lock:
            held = {tid: (t.get("deadline", ""), t.get("inquiry") or [])
                    for tid, t in store.data["txns"].items() if t["state"] == "prepared"}
        for tid in list(sched):
            if tid not in held:
                del sched[tid]
        for tid, (deadline, urls) in held.items():
            dl = parse_deadline(deadline)
            if not urls or dl is None:
                continue
            s = sched.setdefault(tid, [dl + grace, 0, 0])
            if now < s[0]:
                continue
            outcome, retry = ask(urls[s[2] % len(urls)], tid, deadline)
            if outcome in ("committed", "rolled_back"):
                with store.lock:  # the same code as the call, under the same lock
                    (store.commit if outcome == "committed" else store.rollback)(tid)
                sys.stderr.write("inquiry %s: %s, applied\n" % (tid, outcome))
                continue
            if outcome is None:
                s[2] += 1  # ask the next node
            wait = min(0.25 * 2 ** s[1], 30) * random.uniform(0.5, 1.5)
            try:
                wait = max(wait, min(float(retry), 300))
            except (TypeError, ValueError):
                pass
            s[0], s[1] = time.time() + wait, s[1] + 1


def handler(store):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet; one line per call on stderr
            sys.stderr.write("%s %s\n" % (self.command, self.path))

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/state":
                with store.lock:
                    return self.reply(200, store.data)
            self.reply(404, {"error": "not_found"})

        def do_POST(self):
            phase = self.path.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
            if phase not in ("prepare", "commit", "rollback"):
                return self.reply(404, {"error": "not_found"})
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                return self.reply(400, {"error": "body too large"})
            try:
                req = json.loads(self.rfile.read(n) or b"{}")
                tid = req["transactionId"]
                if not isinstance(tid, str) or not tid:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                return self.reply(400, {"error": "want {\"transactionId\": ..., \"deadline\": ...}"})
            with store.lock:
                if phase == "prepare":
                    inquiry = req.get("inquiry") or []
                    if not isinstance(inquiry, list) or not all(isinstance(u, str) for u in inquiry):
                        return self.reply(400, {"error": "inquiry must be a list of URLs"})
                    out = store.prepare(tid, req.get("deadline") or "", inquiry)
                else:
                    out = getattr(store, phase)(tid)
            self.reply(200, out)

    return H


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:9101")
    ap.add_argument("--state", default="", help="JSON file for votes and tombstones ('' : memory only)")
    ap.add_argument("--seats", type=int, default=100)
    ap.add_argument("--grace", type=float, default=2.0, help="seconds past a deadline before asking for the outcome")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    store = Store(a.state, a.seats)
    srv = ThreadingHTTPServer((host, int(port)), handler(store))
    stop = threading.Event()
    threading.Thread(target=inquirer, args=(store, a.grace, stop), daemon=True).start()
    print("listening; prepare URL: http://%s:%d/prepare" % srv.server_address[:2], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

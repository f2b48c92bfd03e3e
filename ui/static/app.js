// txcoord operations page: reads this node's HTTP API and redraws every REFRESH_MS.
//
// Transactions: GET /v1/transactions lists newest first, so each refresh reads one page of
// the newest (never the whole history). Transactions in flight come from the three
// in-progress status filters, stuck ones from GET /v1/stuck; any transaction the page
// still shows as unfinished and that no list mentions any more is read again by id, which
// is how "recent outcomes" learns how in-flight transactions ended.
//
// Charts: every transaction the page reads (newest page, in-flight and stuck lists, reads by
// id, search results) is remembered by id with its created, decided and finished times;
// on load (and when the window grows) one page of the window's newest is read. The charts
// bucket them by finish time. A refresh whose newest page does not reach back to the newest
// transaction of the previous one leaves a gap: its buckets are drawn as "not every
// transaction read".
//
// Search and history: one request per page (GET /v1/transactions with the filters and
// after=<the previous page's next>, or GET /v1/transactions/{id} for an id); the page keeps
// the cursors of the pages visited, so "newer" goes back without the API knowing.
"use strict";

(() => {
  const REFRESH_MS = 1500;
  const REQUEST_TIMEOUT_MS = 8000;
  const PAGE = 100; // one page of history per request
  const RECENT_KEEP = 200; // transactions the page remembers
  const RECENT_SHOW = 25;
  const INFLIGHT_SHOW = 100;
  const STUCK_SHOW = 100;
  const ACTIVE = ["preparing", "committing", "rolling_back"];
  const DONE = new Set(["committed", "rolled_back"]);
  const CHART_WINDOWS = { 300000: 10000, 900000: 30000, 3600000: 120000 }; // window ms -> bucket ms
  const CHART_BACKFILL = 1000; // one page: the newest of the window, read on load
  const SEEN_MAX = 20000; // transactions remembered for the charts
  const OUTCOMES = ["committed", "rolled_back", "failed"];
  const STATUS_LABEL = {
    preparing: "preparing", committing: "committing", rolling_back: "rolling back",
    committed: "committed", rolled_back: "rolled back", failed: "failed",
  };

  const $ = (id) => document.getElementById(id);
  const st = {
    recent: new Map(), // id -> TransactionView
    stuckAge: 30000,
    paused: false,
    busy: false,
    again: false,
    timer: 0,
    lastOk: 0,
    action: null, // {kind, id} while the action dialog is open
    // Bearer tokens, when the node requires them (a 401 asks for one). Kept in
    // sessionStorage: this tab only, gone when it closes.
    token: load("txcoord.token"),
    opToken: load("txcoord.operatorToken"),
    needToken: false,
    chart: {
      windowMs: 300000,
      seen: new Map(), // id -> {c: created, d: decided, f: finished (unix ms, 0 unset), s: status}
      gaps: [], // [from, to] creation-time ranges the page did not read
      coveredFrom: 0, // the window's start when it was last read in full (0: not yet)
      backfilling: false,
      newest: 0, // newest createdAt of the previous refresh's newest page
      sig: "",
    },
    hist: {
      q: null, // the search being shown
      cursors: [""], // after= of each page visited; cursors[page]
      page: 0,
      seq: 0,
      busy: false,
      found: 0, // transactions on the page shown
      loaded: false,
    },
  };

  function load(k) {
    try { return sessionStorage.getItem(k) || ""; } catch (_) { return ""; }
  }
  function store(k, v) {
    try { if (v) sessionStorage.setItem(k, v); else sessionStorage.removeItem(k); } catch (_) { /* storage off */ }
  }

  // ---------- HTTP ----------

  function apiURL(path) {
    return new URL("../" + path, document.baseURI).toString();
  }

  class APIError extends Error {
    constructor(status, body, fallback) {
      const detail = body && (body.detail || body.error);
      super(detail ? detail : fallback);
      this.status = status;
      this.code = body && body.error;
    }
  }

  async function request(path, options = {}) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    const token = options.token !== undefined ? options.token : st.token;
    if (token) headers.Authorization = "Bearer " + token;
    let resp;
    try {
      resp = await fetch(apiURL(path), { method: options.method, body: options.body, headers, signal: ctl.signal, cache: "no-store", credentials: "omit" });
    } catch (e) {
      throw new APIError(0, null, e.name === "AbortError" ? "no answer within " + REQUEST_TIMEOUT_MS / 1000 + " s" : "the node cannot be reached");
    } finally {
      clearTimeout(timer);
    }
    let body = null;
    try { body = await resp.json(); } catch (_) { /* not JSON */ }
    if (!resp.ok) throw new APIError(resp.status, body, "HTTP " + resp.status);
    return body;
  }

  // ---------- polling ----------

  async function refresh() {
    if (st.busy) { st.again = true; return; }
    st.busy = true;
    clearTimeout(st.timer);
    try {
      const [cluster, stuck, ...active] = await Promise.all([
        request("v1/cluster"),
        request("v1/stuck?olderThan=" + st.stuckAge),
        ...ACTIVE.map((s) => request("v1/transactions?status=" + s + "&limit=" + PAGE)),
      ]);
      const fresh = new Map();
      const inflight = [];
      let inflightMore = false;
      for (const list of active) {
        for (const t of list.transactions) { fresh.set(t.transactionId, t); inflight.push(t); }
        if (list.next) inflightMore = true;
      }
      for (const t of stuck.transactions) fresh.set(t.transactionId, t);
      await pullNew(fresh);
      for (const [id, t] of fresh) { st.recent.set(id, t); observe(t); }
      await settle(fresh);
      trimRecent();
      render(cluster, stuck.transactions, inflight, inflightMore);
      if (!st.chart.coveredFrom || st.chart.coveredFrom > Date.now() - st.chart.windowMs) backfill();
      // The first page of the search is live: read again with every refresh.
      if (!st.hist.loaded) { st.hist.loaded = true; search(true); } else if (st.hist.page === 0 && !st.hist.busy && !(st.hist.q.by === "id" && st.hist.q.text && !st.hist.found)) search(false, true);
      st.lastOk = Date.now();
      showSignin(false);
      setBanner(cluster.leaderId ? "" : "No leader is known to this node: the cluster cannot run transactions or operator actions until one is elected (election in progress or no quorum).");
      setUpdated();
    } catch (e) {
      if (e.status === 401) {
        showSignin(true, st.token ? "The token was refused: " + e.message : "");
        setBanner("");
        setUpdated(true);
        return;
      }
      setBanner("Cannot read this node's API: " + e.message + "." + (st.lastOk ? " Showing what it said at " + clock(st.lastOk) + "." : ""));
      setUpdated(true);
    } finally {
      st.busy = false;
      if (st.again) { st.again = false; refresh(); } else schedule();
    }
  }

  function schedule() {
    clearTimeout(st.timer);
    if (!st.paused && !st.needToken && !document.hidden) st.timer = setTimeout(refresh, REFRESH_MS);
  }

  // pullNew reads the newest page of transactions (one request, at most PAGE of them).
  async function pullNew(fresh) {
    const page = await request("v1/transactions?limit=" + PAGE);
    for (const t of page.transactions.slice(0, RECENT_KEEP)) fresh.set(t.transactionId, t);
    const created = page.transactions.map((t) => Date.parse(t.createdAt));
    if (created.length) {
      const oldest = Math.min(...created);
      const ch = st.chart;
      // A full page that starts after the previous refresh's newest: some were not read.
      if (page.next && ch.newest && oldest > ch.newest) ch.gaps.push([ch.newest, oldest]);
      ch.newest = Math.max(ch.newest, ...created);
    }
  }

  // settle reads again, by id, every remembered transaction that was unfinished and that no
  // list of this round mentions: it has moved on (or was pruned from the log).
  async function settle(fresh) {
    const ids = [];
    for (const [id, t] of st.recent) {
      // A leader may answer a settled outcome before its completion entry (no finishedAt yet).
      if ((!DONE.has(t.status) && !fresh.has(id)) || (DONE.has(t.status) && !t.finishedAt)) ids.push(id);
    }
    await Promise.all(ids.slice(0, 50).map(async (id) => {
      try {
        const t = await request("v1/transactions/" + encodeURIComponent(id));
        st.recent.set(id, t);
        observe(t);
      } catch (e) {
        if (e.status === 404) st.recent.delete(id); else throw e;
      }
    }));
  }

  function trimRecent() {
    if (st.recent.size <= RECENT_KEEP) return;
    const ids = [...st.recent.keys()].sort().reverse();
    for (const id of ids.slice(RECENT_KEEP)) st.recent.delete(id);
  }

  // ---------- rendering helpers ----------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k.startsWith("data-")) el.dataset[k.slice(5).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // sync makes parent's children the rendered items, in order, keeping (not re-creating)
  // the elements whose item did not change, so focus and hover survive a refresh.
  function sync(parent, items, key, render) {
    const old = new Map();
    for (const el of parent.children) old.set(el.dataset.key, el);
    let prev = null;
    for (const item of items) {
      const k = key(item);
      const sig = JSON.stringify(item);
      let el = old.get(k);
      old.delete(k);
      if (!el || el.dataset.sig !== sig) {
        const fresh = render(item);
        fresh.dataset.key = k;
        fresh.dataset.sig = sig;
        if (el) {
          const focused = el.contains(document.activeElement) && document.activeElement.dataset.focus;
          el.replaceWith(fresh);
          if (focused) { const f = fresh.querySelector('[data-focus="' + focused + '"]'); if (f) f.focus(); }
        }
        el = fresh;
      }
      const want = prev ? prev.nextElementSibling : parent.firstElementChild;
      if (want !== el) parent.insertBefore(el, want);
      prev = el;
    }
    for (const el of old.values()) el.remove();
  }

  function badge(status) {
    return h("span", { class: "badge s-" + status, "data-status": status }, STATUS_LABEL[status] || status);
  }

  function role(name) {
    return h("span", { class: "role r-" + (name || "unknown") }, name || "unknown");
  }

  function txnLink(id) {
    return h("button", { type: "button", class: "txn-link", "data-focus": "open", "aria-haspopup": "dialog", onclick: () => openTxn(id) }, id);
  }

  function relTime(iso) {
    if (!iso) return h("span", { class: "muted" }, "–");
    return h("time", { datetime: iso, "data-rel": "1", title: new Date(iso).toLocaleString() }, rel(iso));
  }

  function rel(iso) {
    const d = Date.now() - Date.parse(iso);
    const a = Math.abs(d);
    if (a < 1500) return "just now";
    let s;
    if (a < 60e3) s = Math.round(a / 1e3) + " s";
    else if (a < 3600e3) s = Math.round(a / 60e3) + " min";
    else if (a < 86400e3) s = Math.round(a / 3600e3) + " h";
    else return new Date(iso).toLocaleString();
    return d >= 0 ? s + " ago" : "in " + s;
  }

  function duration(ms) {
    if (!(ms >= 0)) return "–";
    if (ms < 1000) return ms + " ms";
    if (ms < 60e3) return (ms / 1e3).toFixed(ms < 10e3 ? 2 : 1) + " s";
    if (ms < 3600e3) return Math.floor(ms / 60e3) + " min " + Math.round((ms % 60e3) / 1e3) + " s";
    return (ms / 3600e3).toFixed(1) + " h";
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString();
  }

  function tickTimes() {
    for (const t of document.querySelectorAll("time[data-rel]")) {
      const s = rel(t.getAttribute("datetime"));
      if (t.textContent !== s) t.textContent = s;
    }
  }

  function setText(id, v) {
    const el = $(id);
    const s = String(v);
    if (el.textContent !== s) el.textContent = s;
  }

  function setBanner(msg) {
    const b = $("banner");
    if (b.textContent !== msg) b.textContent = msg;
    b.hidden = !msg;
  }

  function setUpdated(stale) {
    const u = $("updated");
    u.classList.toggle("stale", !!stale);
    u.classList.toggle("paused", st.paused);
    if (st.paused) u.textContent = "Paused" + (st.lastOk ? " · data from " + clock(st.lastOk) : "");
    else if (st.needToken) u.textContent = "Token required";
    else if (stale) u.textContent = st.lastOk ? "Stale since " + clock(st.lastOk) : "Cannot load";
    else u.textContent = "Live · updated " + clock(st.lastOk);
  }

  function participantsText(t) {
    const n = t.participants.length;
    return n + (n === 1 ? " service" : " services");
  }

  function attemptsOf(t) {
    return t.participants.reduce((m, p) => Math.max(m, p.attempts || 0), 0);
  }

  // ---------- sections ----------

  function render(cluster, stuck, inflight, inflightMore) {
    renderCluster(cluster);
    renderStuck(stuck);
    renderInflight(inflight, inflightMore);
    renderRecent();
    renderCharts();
    tickTimes();
  }

  function renderCluster(c) {
    setText("node-id", c.nodeId);
    const r = $("node-role");
    if (r.textContent !== c.role) { r.textContent = c.role; r.className = "role r-" + c.role; }
    document.title = "txcoord · " + c.nodeId + " (" + c.role + ")";
    const members = c.members || [];
    const voters = members.filter((m) => m.suffrage === "voter").length;
    setText("sum-leader", c.leaderId || "none");
    setText("sum-term", c.term);
    setText("sum-applied", c.appliedIndex);
    const sm = $("sum-members");
    const smText = members.length + " " + voters + " voting";
    if (sm.dataset.text !== smText) {
      sm.dataset.text = smText;
      sm.replaceChildren(String(members.length), " ", h("small", null, voters === members.length ? "all voting" : voters + " voting"));
    }
    setText("fact-commit", c.commitIndex);
    setText("fact-applied", c.appliedIndex);
    setText("fact-last", c.lastIndex);
    setText("fact-contact", c.role === "leader" ? "this node leads" : c.lastContact ? rel(c.lastContact) : "never");
    setText("fact-ready", c.ready ? "yes" : "no");
    setText("cluster-sub", members.length + " members, " + voters + " voting · as seen by " + c.nodeId);
    const rows = members.map((m) => ({
      id: m.id, raftAddr: m.raftAddr, httpAddr: m.httpAddr || "", suffrage: m.suffrage, self: m.id === c.nodeId,
      role: m.leader ? "leader" : m.id === c.nodeId ? c.role : m.suffrage === "voter" ? "follower" : "non-voter",
    }));
    sync($("members-body"), rows, (m) => m.id, (m) => h("tr", null,
      h("th", { scope: "row" }, h("span", { class: "mono" }, m.id), m.self ? h("span", { class: "this-node" }, "(this node)") : null),
      h("td", null, role(m.role)),
      h("td", null, m.suffrage),
      h("td", { class: "mono" }, m.raftAddr),
      h("td", { class: "mono" }, m.httpAddr ? h("a", { href: "http://" + m.httpAddr + "/ui/", title: "Open this page on " + m.id }, m.httpAddr) : "–"),
    ));
  }

  function renderStuck(list) {
    const n = list.length;
    setText("stuck-count", n);
    setText("sum-stuck", n);
    $("stuck-count").classList.toggle("active", n > 0);
    $("tile-stuck").classList.toggle("active", n > 0);
    $("stuck-empty").hidden = n > 0;
    const items = [...list].sort((a, b) => (a.transactionId < b.transactionId ? 1 : -1)).slice(0, STUCK_SHOW);
    sync($("stuck-list"), items, (t) => t.transactionId, stuckItem);
  }

  function stuckItem(t) {
    const id = t.transactionId;
    const headId = "stuck-h-" + id;
    const failed = t.status === "failed";
    const canRetry = failed || t.status === "committing" || t.status === "rolling_back";
    const rows = t.participants.map((p) => h("tr", null,
      h("td", { class: "mono" }, p.prepare),
      h("td", null, p.vote || "–"),
      h("td", null, t.decision ? (p.acknowledged ? "acknowledged" : "not acknowledged") : "–"),
      h("td", null, String(p.attempts)),
      h("td", { class: p.lastError || p.reason ? "error" : "muted" }, p.lastError || p.reason || "–"),
    ));
    return h("article", { class: "stuck-item" + (failed ? "" : " in-progress"), "aria-labelledby": headId, "data-id": id },
      h("div", { class: "stuck-head" },
        h("h3", { id: headId }, h("span", { class: "visually-hidden" }, "Transaction "), txnLink(id)),
        badge(t.status),
        t.decision ? h("span", { class: "muted" }, "decision: ", h("strong", null, t.decision)) : null,
      ),
      h("p", { class: "stuck-meta" },
        h("span", null, "Started ", relTime(t.createdAt)),
        h("span", null, "Phase-two attempts: ", h("strong", { "data-attempts": String(attemptsOf(t)) }, String(attemptsOf(t)))),
        h("span", null, "Raft index ", h("strong", null, String(t.index))),
        t.note ? h("span", { class: "note" }, t.note) : null,
      ),
      h("div", { class: "table-wrap" }, h("table", { class: "data" },
        h("caption", { class: "visually-hidden" }, "Participants of transaction " + id),
        h("thead", null, h("tr", null, ["Participant (prepare URL)", "Vote", "Phase two", "Attempts", "Last error"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", null, rows),
      )),
      h("div", { class: "actions" },
        canRetry ? h("button", { type: "button", class: "btn btn-primary", "data-action": "retry", "data-focus": "retry", "aria-describedby": headId, "aria-haspopup": "dialog", onclick: () => openAction("retry", id) }, "Retry now") : null,
        failed ? h("button", { type: "button", class: "btn btn-danger", "data-action": "resolve", "data-focus": "resolve", "aria-describedby": headId, "aria-haspopup": "dialog", onclick: () => openAction("resolve", id) }, "Resolve…") : null,
        t.status === "preparing" ? h("p", { class: "hint" }, "Still in phase one: it is decided when every participant has voted or at its deadline.") : null,
      ),
    );
  }

  function renderInflight(list, more) {
    const n = list.length;
    setText("inflight-count", n + (more ? "+" : ""));
    setText("sum-inflight", n + (more ? "+" : ""));
    $("inflight-empty").hidden = n > 0;
    $("inflight-table").hidden = n === 0;
    const items = [...list].sort((a, b) => (a.transactionId < b.transactionId ? 1 : -1)).slice(0, INFLIGHT_SHOW);
    sync($("inflight-body"), items, (t) => t.transactionId, (t) => h("tr", { "data-id": t.transactionId },
      h("th", { scope: "row" }, txnLink(t.transactionId)),
      h("td", null, badge(t.status)),
      h("td", null, participantsText(t)),
      h("td", { class: "nowrap" }, relTime(t.createdAt)),
      h("td", { class: "nowrap" }, relTime(t.deadline)),
    ));
  }

  function renderRecent() {
    const all = [...st.recent.values()].filter((t) => DONE.has(t.status) || t.status === "failed");
    all.sort((a, b) => (a.transactionId < b.transactionId ? 1 : -1));
    const items = all.slice(0, RECENT_SHOW);
    const count = (s) => items.filter((t) => t.status === s).length;
    $("recent-empty").hidden = items.length > 0;
    $("recent-table").hidden = items.length === 0;
    setText("recent-sub", items.length
      ? "Newest " + items.length + ": " + count("committed") + " committed, " + count("rolled_back") + " rolled back, " + count("failed") + " failed"
      : "The newest finished transactions");
    sync($("recent-body"), items, (t) => t.transactionId, (t) => {
      const took = t.finishedAt ? Date.parse(t.finishedAt) - Date.parse(t.createdAt) : NaN;
      const reasons = t.errors.map((e) => h("li", null, e));
      if (t.note) reasons.push(h("li", { class: "note" }, t.note));
      return h("tr", { "data-id": t.transactionId },
        h("th", { scope: "row" }, txnLink(t.transactionId)),
        h("td", null, badge(t.status)),
        h("td", null, participantsText(t)),
        h("td", { class: "nowrap" }, relTime(t.createdAt)),
        h("td", { class: "nowrap" }, t.finishedAt ? duration(took) : "–"),
        h("td", { class: "reasons" }, reasons.length ? h("ul", null, reasons) : h("span", { class: "muted" }, "–")),
      );
    });
  }

  // ---------- charts: outcomes and latency over the last minutes ----------

  // observe remembers what the charts need of a transaction the page has read.
  function observe(t) {
    const ms = (iso) => (iso ? Date.parse(iso) : 0);
    st.chart.seen.set(t.transactionId, { c: ms(t.createdAt), d: ms(t.decidedAt), f: ms(t.finishedAt), s: t.status });
  }

  function pruneSeen(now) {
    const ch = st.chart;
    const from = now - 3600000 - 120000; // the longest window and a bucket
    for (const [id, r] of ch.seen) if (Math.max(r.c, r.f) < from) ch.seen.delete(id);
    ch.gaps = ch.gaps.filter((g) => g[1] >= from);
    if (ch.seen.size > SEEN_MAX) {
      const old = [...ch.seen].sort((a, b) => a[1].c - b[1].c).slice(0, ch.seen.size - SEEN_MAX);
      for (const [id] of old) ch.seen.delete(id);
    }
  }

  // backfill reads one page, the newest transactions created in the window: what the
  // charts show right after the page loads. If the window holds more, the rest is a gap.
  async function backfill() {
    const ch = st.chart;
    if (ch.backfilling) return;
    ch.backfilling = true;
    const from = Date.now() - ch.windowMs;
    try {
      const page = await request("v1/transactions?createdFrom=" + from + "&limit=" + CHART_BACKFILL);
      for (const t of page.transactions) observe(t);
      if (page.next && page.transactions.length) {
        ch.gaps.push([from, Math.min(...page.transactions.map((t) => Date.parse(t.createdAt)))]);
      }
      ch.coveredFrom = ch.coveredFrom ? Math.min(ch.coveredFrom, from) : from;
      renderCharts();
    } catch (_) {
      // The next refresh tries again (and shows the connection problem).
    } finally {
      ch.backfilling = false;
    }
  }

  function median(xs) {
    if (!xs.length) return NaN;
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : Math.round((s[m - 1] + s[m]) / 2);
  }

  // niceMax is the smallest 1, 2 or 5 times a power of ten at or above v.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function chartBuckets(now) {
    const ch = st.chart;
    const B = CHART_WINDOWS[ch.windowMs];
    const n = Math.round(ch.windowMs / B);
    const end = Math.floor(now / B) * B + B; // the end of the bucket that holds now
    const start = end - n * B;
    const buckets = [];
    for (let i = 0; i < n; i++) {
      const t0 = start + i * B;
      buckets.push({
        t: t0, committed: 0, rolled_back: 0, failed: 0, total: [], phase1: [],
        partial: t0 < ch.coveredFrom || !ch.coveredFrom || ch.gaps.some((g) => g[0] < t0 + B && g[1] > t0),
      });
    }
    for (const r of ch.seen.values()) {
      if (!r.f || !OUTCOMES.includes(r.s)) continue;
      // A finish time ahead of this browser's clock counts in the newest bucket.
      const i = Math.floor((Math.min(r.f, end - 1) - start) / B);
      if (i < 0) continue;
      const b = buckets[i];
      b[r.s]++;
      if (r.s !== "failed") { // a failed one's time is phase two giving up
        b.total.push(r.f - r.c);
        if (r.d) b.phase1.push(r.d - r.c);
      }
    }
    return { buckets, start, end, B };
  }

  const SVGNS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.setAttribute("class", v);
      else if (k.startsWith("data-")) el.dataset[k.slice(5).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = v;
      else el.setAttribute(k, v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const CW = 640, CH = 190, PAD = { l: 58, r: 10, t: 10, b: 26 };

  function windowLabel(ms) {
    return ms >= 3600000 ? ms / 3600000 + " h" : ms / 60000 + " min";
  }

  // frame draws the grid, the y labels (0, half, max) and the x labels (the window's start,
  // its middle and now).
  function frame(yMax, fmt, B, n) {
    const pw = CW - PAD.l - PAD.r, ph = CH - PAD.t - PAD.b;
    const g = s("g", { class: "frame" });
    for (const f of [0, 0.5, 1]) {
      const y = PAD.t + ph - f * ph;
      g.append(s("line", { class: "grid", x1: PAD.l, x2: CW - PAD.r, y1: y, y2: y }));
      const label = fmt(f * yMax);
      if (label !== null) g.append(s("text", { class: "axis", "data-axis": "y", "data-value": f * yMax, x: PAD.l - 6, y: y + 4, "text-anchor": "end" }, label));
    }
    const w = n * B;
    for (const [f, label, anchor] of [[0, "−" + windowLabel(w), "start"], [0.5, "−" + windowLabel(w / 2), "middle"], [1, "now", "end"]]) {
      g.append(s("text", { class: "axis", "data-axis": "x", x: PAD.l + f * pw, y: CH - 8, "text-anchor": anchor }, label));
    }
    return g;
  }

  function span(b, B) {
    return clock(b.t) + "–" + clock(b.t + B);
  }

  function renderCharts() {
    const now = Date.now();
    pruneSeen(now);
    const { buckets, B } = chartBuckets(now);
    const n = buckets.length;
    const sig = JSON.stringify([st.chart.windowMs, buckets]);
    if (sig === st.chart.sig) return;
    st.chart.sig = sig;
    const pw = CW - PAD.l - PAD.r, ph = CH - PAD.t - PAD.b;
    const bw = pw / n;

    // Outcomes: one stacked bar per bucket.
    const sums = { committed: 0, rolled_back: 0, failed: 0 };
    for (const b of buckets) for (const k of OUTCOMES) sums[k] += b[k];
    const yMax = niceMax(Math.max(1, ...buckets.map((b) => b.committed + b.rolled_back + b.failed)));
    const bars = s("g", { class: "bars" });
    buckets.forEach((b, i) => {
      const x = PAD.l + i * bw;
      if (b.partial) bars.append(s("rect", { class: "partial", x: x, y: PAD.t, width: bw, height: ph, "data-t": b.t }, s("title", null, span(b, B) + ": not every transaction of this interval was read")));
      let y = PAD.t + ph;
      for (const k of OUTCOMES) {
        if (!b[k]) continue;
        const hgt = (b[k] / yMax) * ph;
        y -= hgt;
        bars.append(s("rect", { class: "bar s-" + k, x: (x + 1).toFixed(1), y: y.toFixed(1), width: Math.max(1, bw - 2).toFixed(1), height: hgt.toFixed(1), "data-status": k, "data-count": b[k], "data-t": b.t },
          s("title", null, span(b, B) + ": " + b[k] + " " + STATUS_LABEL[k] + (b.partial ? " (at least)" : ""))));
      }
    });
    const outSum = sums.committed + " committed, " + sums.rolled_back + " rolled back, " + sums.failed + " failed in the last " + windowLabel(st.chart.windowMs) + " (per " + B / 1000 + " s)";
    setText("chart-outcomes-sum", outSum);
    $("chart-outcomes-svg").replaceChildren(s("svg", { viewBox: "0 0 " + CW + " " + CH, role: "img", "aria-label": "Outcomes: " + outSum, class: "chart-plot" },
      frame(yMax, (v) => (Number.isInteger(v) ? String(v) : null), B, n), bars));

    // Latency: slowest and median begin-to-end, median phase one, per bucket.
    const stats = buckets.map((b) => ({ t: b.t, max: b.total.length ? Math.max(...b.total) : NaN, median: median(b.total), phase1: median(b.phase1), n: b.total.length }));
    const all = buckets.flatMap((b) => b.total);
    const lMax = niceMax(Math.max(1, ...stats.map((x) => x.max).filter((v) => v >= 0)));
    const yOf = (v) => PAD.t + ph - (Math.min(v, lMax) / lMax) * ph;
    const lines = s("g", { class: "lines" });
    for (const k of ["phase1", "median", "max"]) {
      let d = "", pen = false;
      stats.forEach((x, i) => {
        const v = x[k];
        if (!(v >= 0)) { pen = false; return; }
        const px = (PAD.l + (i + 0.5) * bw).toFixed(1), py = yOf(v).toFixed(1);
        d += (pen ? " L" : " M") + px + " " + py;
        pen = true;
      });
      if (d) lines.append(s("path", { class: "line l-" + k, d: d.trim(), "data-series": k }));
    }
    const pts = s("g", { class: "points" });
    stats.forEach((x, i) => {
      if (!x.n) return;
      const px = (PAD.l + (i + 0.5) * bw).toFixed(1);
      const tip = span(buckets[i], B) + ": " + x.n + " finished, median " + duration(x.median) + ", slowest " + duration(x.max) + (x.phase1 >= 0 ? ", median phase one " + duration(x.phase1) : "");
      for (const k of ["max", "median"]) {
        pts.append(s("circle", { class: "pt pt-" + k, cx: px, cy: yOf(x[k]).toFixed(1), r: 3, "data-series": k, "data-ms": x[k], "data-t": x.t }, s("title", null, tip)));
      }
    });
    const latSum = all.length ? all.length + " finished: median " + duration(median(all)) + ", slowest " + duration(Math.max(...all)) : "no transaction finished in the window";
    setText("chart-latency-sum", latSum);
    $("chart-latency-svg").replaceChildren(s("svg", { viewBox: "0 0 " + CW + " " + CH, role: "img", "aria-label": "Latency: " + latSum, class: "chart-plot" },
      frame(lMax, (v) => (Number.isInteger(v) ? duration(v) : null), B, n), lines, pts));
  }

  // ---------- search and history ----------

  const SEARCH_LABEL = { id: "Transaction id", key: "Idempotency key", participant: "Participant (host or URL)" };

  function localInput(v) {
    // datetime-local is local time without a zone; the API wants RFC 3339 or unix ms.
    if (!v) return "";
    const ms = new Date(v).getTime();
    return Number.isFinite(ms) ? String(ms) : null;
  }

  function readSearch() {
    const by = $("search-by").value;
    let text = $("search-text").value.trim();
    if (by === "participant" && /^https?:\/\//i.test(text)) {
      // A base URL (no path) means its host; a URL with a path is matched as it is.
      try { const u = new URL(text); if (u.pathname === "/" && !u.search) text = u.host; } catch (_) { /* the API says */ }
    }
    return {
      by, text,
      status: $("search-status").value,
      from: localInput($("search-from").value), to: localInput($("search-to").value),
      order: $("search-order").value, limit: $("search-limit").value,
    };
  }

  function searchPath(q, after) {
    const p = new URLSearchParams();
    p.set("limit", q.limit);
    if (q.order === "asc") p.set("order", "asc");
    if (q.status) p.set("status", q.status);
    if (q.from) p.set("createdFrom", q.from);
    if (q.to) p.set("createdTo", q.to);
    if (q.text && q.by === "key") p.set("key", q.text);
    if (q.text && q.by === "participant") p.set("participant", q.text);
    if (after) p.set("after", after);
    return "v1/transactions?" + p.toString();
  }

  function searchError(msg) {
    const e = $("search-error");
    e.textContent = msg || "";
    e.hidden = !msg;
    if (msg) $("search-text").setAttribute("aria-invalid", "true");
    else $("search-text").removeAttribute("aria-invalid");
  }

  // search shows a page of the search: the first of a new one (reset), else st.hist.page.
  // live: the refresh of the first page; it leaves the error line alone.
  async function search(reset, live) {
    const hs = st.hist;
    if (reset) {
      const q = readSearch();
      if (q.from === null || q.to === null) { searchError("Enter the creation times as a date and a time."); return; }
      hs.q = q;
      hs.cursors = [""];
      hs.page = 0;
    }
    const q = hs.q;
    const seq = ++hs.seq;
    hs.busy = true;
    if (!live) { searchError(""); $("history").setAttribute("aria-busy", "true"); }
    let list, next = "";
    try {
      if (q.by === "id" && q.text) {
        try {
          list = [await request("v1/transactions/" + encodeURIComponent(q.text))];
        } catch (e) {
          if (e.status !== 404) throw e;
          list = [];
        }
      } else {
        const page = await request(searchPath(q, hs.cursors[hs.page]));
        list = page.transactions;
        next = page.next;
      }
    } catch (e) {
      if (seq !== hs.seq || live) return;
      searchError((e.status ? "The node refused the search (HTTP " + e.status + "): " : "Not searched: ") + e.message);
      setText("search-result", "");
      setText("search-when", "");
      return;
    } finally {
      if (seq === hs.seq) { hs.busy = false; $("history").removeAttribute("aria-busy"); }
    }
    if (seq !== hs.seq) return;
    for (const t of list) observe(t);
    hs.cursors.length = hs.page + 1;
    if (next) hs.cursors.push(next);
    renderHistory(q, list, next, live);
  }

  function describeSearch(q) {
    const parts = [];
    if (q.text) parts.push((q.by === "id" ? "id " : q.by === "key" ? "idempotency key " : "participant ") + "“" + q.text + "”");
    if (q.by !== "id" || !q.text) {
      if (q.status) parts.push("status " + STATUS_LABEL[q.status]);
      if (q.from) parts.push("created from " + new Date(Number(q.from)).toLocaleString());
      if (q.to) parts.push("created before " + new Date(Number(q.to)).toLocaleString());
    }
    return parts.length ? parts.join(", ") : "all transactions";
  }

  function renderHistory(q, list, next, live) {
    const hs = st.hist;
    const byId = q.by === "id" && q.text;
    const asc = q.order === "asc" && !byId;
    const newer = asc ? $("page-next") : $("page-prev");
    const older = asc ? $("page-prev") : $("page-next");
    $("page-prev").textContent = asc ? "← Older" : "← Newer";
    $("page-next").textContent = asc ? "Newer →" : "Older →";
    $("page-prev").disabled = hs.page === 0;
    $("page-next").disabled = !next;
    newer.dataset.dir = "newer";
    older.dataset.dir = "older";
    $("history-table").hidden = list.length === 0;
    setText("page-info", "Page " + (hs.page + 1));
    $("page-info").dataset.page = String(hs.page + 1);
    let msg;
    if (byId) msg = list.length ? "Transaction " + q.text + " found" : "No transaction with id “" + q.text + "” on this cluster (it may have been pruned)";
    else if (list.length === 0 && next) msg = "Page " + (hs.page + 1) + " of " + describeSearch(q) + ": none on this page (a participant search examines a bounded number of records per request); " + (asc ? "Newer" : "Older") + " continues";
    else if (list.length === 0) msg = hs.page === 0 ? "No transaction matches: " + describeSearch(q) : "No more transactions: " + describeSearch(q);
    else msg = "Page " + (hs.page + 1) + " of " + describeSearch(q) + ", " + (asc ? "oldest" : "newest") + " first: " + list.length + (list.length === 1 ? " transaction" : " transactions") + (next ? "; more on the next page" : "; no more");
    hs.found = list.length;
    setText("search-result", msg);
    setText("search-when", (hs.page === 0 ? "live, updated " : "read at ") + clock(Date.now()));
    setText("history-sub", describeSearch(q) === "all transactions" ? "Every transaction the cluster keeps, one page per request" : "Search: " + describeSearch(q));
    sync($("history-body"), list, (t) => t.transactionId, historyRow);
    tickTimes();
  }

  function reasonsCell(t) {
    const reasons = t.errors.map((e) => h("li", null, e));
    if (t.note) reasons.push(h("li", { class: "note" }, t.note));
    return h("td", { class: "reasons" }, reasons.length ? h("ul", null, reasons) : h("span", { class: "muted" }, "–"));
  }

  function historyRow(t) {
    const took = t.finishedAt ? Date.parse(t.finishedAt) - Date.parse(t.createdAt) : NaN;
    return h("tr", { "data-id": t.transactionId },
      h("th", { scope: "row" }, txnLink(t.transactionId)),
      h("td", null, badge(t.status)),
      h("td", { class: "hosts" }, t.participants.map((p) => hostOf(p.prepare)).join(", ")),
      h("td", { class: "mono" }, t.idempotencyKey || h("span", { class: "muted" }, "–")),
      h("td", { class: "nowrap" }, relTime(t.createdAt)),
      h("td", { class: "nowrap" }, t.finishedAt ? duration(took) : "–"),
      reasonsCell(t),
    );
  }

  function hostOf(u) {
    try { return new URL(u).host; } catch (_) { return u; }
  }

  function clearSearch() {
    $("search-form").reset();
    updateSearchLabel();
    search(true);
  }

  function updateSearchLabel() {
    const by = $("search-by").value;
    $("search-text-label").textContent = SEARCH_LABEL[by];
    $("search-text").placeholder = by === "id" ? "e.g. 01J9Z…" : by === "key" ? "e.g. order-4711" : "e.g. hotel:9000 or http://hotel:9000/prepare";
    // An id is looked up exactly: the filters do not apply.
    const byId = by === "id";
    for (const id of ["search-status", "search-from", "search-to", "search-order", "search-limit"]) $(id).disabled = byId && !!$("search-text").value.trim();
  }

  // ---------- transaction detail ----------

  // timeline lists what the transaction's record says happened, in order. The record keeps
  // the creation, decision and finish times; votes are recorded with the decision (their
  // time is the decision's), phase-two attempts only as a count and the last error, and
  // only the last operator note, without its time.
  function timeline(t) {
    const c = Date.parse(t.createdAt);
    const d = t.decidedAt ? Date.parse(t.decidedAt) : 0;
    const f = t.finishedAt ? Date.parse(t.finishedAt) : 0;
    const items = [];
    const add = (kind, at, title, detail, extra) => items.push({ kind, at, title, detail, ...extra });
    add("created", c, "Created", t.participants.length + (t.participants.length === 1 ? " participant" : " participants") +
      "; phase one until " + preciseClock(Date.parse(t.deadline)) + " (" + t.timeoutMs + " ms)" + (t.idempotencyKey ? "; idempotency key " + t.idempotencyKey : ""));
    t.participants.forEach((p, i) => {
      const host = hostOf(p.prepare);
      if (!t.decision) { add("vote", 0, "Waiting for the vote of " + host, "phase one is running", { i, pending: true }); return; }
      const title = p.vote === "ACK" ? "Voted ACK: " + host
        : p.vote === "NACK" ? "Voted NACK: " + host
          : p.vote === "error" ? "No valid vote from " + host
            : "No vote from " + host + " before the decision";
      const why = p.reason || (p.vote ? "" : "a timeout, or phase one cut short by another participant's no");
      add("vote", d, title, why, { i, vote: p.vote || "none", atDecision: true });
    });
    if (t.decision) {
      add("decided", d, "Decided " + t.decision, "after " + duration(d - c) + (d >= Date.parse(t.deadline) ? ", at the phase-one deadline" : ""));
      const msg = t.decision === "commit" ? "Commit" : "Rollback";
      t.participants.forEach((p, i) => {
        const host = hostOf(p.prepare);
        const tries = p.attempts + (p.attempts === 1 ? " attempt" : " attempts");
        const title = p.acknowledged ? msg + " acknowledged by " + host : msg + " not acknowledged by " + host;
        add("phase-two", 0, title, tries + (p.lastError ? "; last error: " + p.lastError : ""), { i, acked: p.acknowledged, error: !!p.lastError });
      });
    }
    if (t.status === "failed") add("failed", f, "Failed", "phase two gave up; it waits for an operator (retry or resolve)");
    if (t.note) add("note", 0, "Operator note", t.note);
    if (DONE.has(t.status)) {
      add("finished", f, STATUS_LABEL[t.status][0].toUpperCase() + STATUS_LABEL[t.status].slice(1),
        f ? "after " + duration(f - c) + " in all" + (d ? ", phase two " + duration(f - d) : "") : "its completion entry is on its way into the log");
    } else if (t.status !== "failed") {
      add("now", 0, "Now " + STATUS_LABEL[t.status], t.decision ? "phase two is being driven" : "waiting for votes or the deadline", { pending: true });
    }
    return h("ol", { class: "timeline", id: "txn-timeline" }, items.map((it) => h("li", {
      class: "tl-" + it.kind + (it.pending ? " pending" : "") + (it.vote === "NACK" || it.vote === "error" || it.error || it.kind === "failed" ? " bad" : ""),
      "data-kind": it.kind, "data-t": it.at ? String(it.at) : null, "data-participant": it.i !== undefined ? String(it.i) : null, "data-vote": it.vote,
    },
    h("span", { class: "tl-time" }, it.at
      ? h("time", { datetime: new Date(it.at).toISOString(), title: it.atDecision ? "The vote is recorded with the decision: this is the decision's time" : new Date(it.at).toLocaleString() },
        (it.atDecision ? "by " : "") + preciseClock(it.at), h("small", null, " +" + duration(it.at - c)))
      : h("span", { class: "muted", title: "The record keeps no time for this" }, it.pending ? "pending" : "time not recorded")),
    h("span", { class: "tl-what" }, h("strong", null, it.title), it.detail ? h("span", { class: "tl-detail" }, it.detail) : null),
    )));
  }

  function preciseClock(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }


  async function openTxn(id) {
    const dlg = $("txn-dialog");
    const body = $("txn-body");
    $("txn-title").textContent = "Transaction " + id;
    body.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    if (!dlg.open) dlg.showModal();
    try {
      const t = await request("v1/transactions/" + encodeURIComponent(id));
      st.recent.set(id, t);
      observe(t);
      const rows = [
        ["Status", badge(t.status)], ["Decision", t.decision || "not decided yet"],
        ["Created", fmtTime(t.createdAt)], ["Phase-one deadline", fmtTime(t.deadline) + " (" + t.timeoutMs + " ms)"],
        ["Decided", fmtTime(t.decidedAt)], ["Finished", fmtTime(t.finishedAt)],
        ["Idempotency key", t.idempotencyKey || "–"], ["Raft index of last change", String(t.index)],
        ["Operator note", t.note || "–"],
      ];
      // A transaction pruned from the state is answered from the node's archive.
      if (t.archived) rows.push(["Archived", "yes: pruned from the replicated state, read from this node's archive"]);
      body.replaceChildren(...[
        h("dl", { class: "detail-grid" }, rows.map(([k, v]) => [h("dt", { "data-row": k }, k), h("dd", null, v)])),
        h("h3", null, "Timeline"),
        timeline(t),
        h("h3", null, "Participants"),
        h("div", { class: "table-wrap" }, h("table", { class: "data" },
          h("thead", null, h("tr", null, ["Prepare", "Commit", "Rollback", "Vote", "Phase two", "Attempts", "Last error or reason"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", null, t.participants.map((p) => h("tr", null,
            h("td", { class: "mono" }, p.prepare), h("td", { class: "mono" }, p.commit), h("td", { class: "mono" }, p.rollback),
            h("td", null, p.vote || "–"), h("td", null, p.acknowledged ? "acknowledged" : "–"),
            h("td", null, String(p.attempts)), h("td", null, p.lastError || p.reason || "–"),
          ))),
        )),
        t.errors.length ? [h("h3", null, "Errors"), h("ul", { class: "txn-errors" }, t.errors.map((e) => h("li", null, e)))] : null,
      ].flat(Infinity).filter(Boolean));
    } catch (e) {
      body.replaceChildren(h("p", { class: "form-error", role: "alert" }, "Cannot read the transaction: " + e.message));
    }
  }

  function fmtTime(iso) {
    return iso ? new Date(iso).toLocaleString() + " (" + rel(iso) + ")" : "–";
  }

  // ---------- tokens ----------

  function showSignin(show, error) {
    st.needToken = show;
    const card = $("signin");
    const wasHidden = card.hidden;
    card.hidden = !show;
    const err = $("signin-error");
    err.textContent = error || "";
    err.hidden = !error;
    if (error) $("signin-token").setAttribute("aria-invalid", "true");
    else $("signin-token").removeAttribute("aria-invalid");
    if (show && (wasHidden || error)) $("signin-token").focus();
    $("signout").hidden = !(st.token || st.opToken);
  }

  function submitSignin(ev) {
    ev.preventDefault();
    const input = $("signin-token");
    const tok = input.value.trim();
    if (!tok) {
      showSignin(true, "Enter a token.");
      return;
    }
    st.token = tok;
    store("txcoord.token", tok);
    input.value = "";
    st.needToken = false;
    refresh();
  }

  function forgetTokens() {
    st.token = st.opToken = "";
    store("txcoord.token", "");
    store("txcoord.operatorToken", "");
    $("signout").hidden = true;
    toast("Tokens forgotten.");
    refresh();
  }

  // ---------- operator actions ----------

  const ACTIONS = {
    retry: {
      title: "Retry phase two now",
      desc: "The leader sends the decision again, now, to every participant that has not acknowledged it. The retry and your note are recorded in the Raft log.",
      label: "Note (optional)",
      hint: "For the transaction's history, e.g. “ledger back online”.",
      submit: "Retry now",
      done: "Retry accepted",
    },
    resolve: {
      title: "Resolve by hand",
      desc: "Use this once you have settled the transaction with its participants yourself. It is marked committed or rolled back, as decided, and nothing more is sent to the participants. Your note is kept in its history.",
      label: "Note (required)",
      hint: "Say how it was settled, e.g. “booking confirmed by hand in the ledger, ticket OPS-123”.",
      submit: "Resolve",
      done: "Resolved",
    },
  };

  function openAction(kind, id) {
    const a = ACTIONS[kind];
    st.action = { kind, id };
    $("action-title").textContent = a.title;
    $("action-desc").textContent = a.desc;
    $("action-txn").textContent = id;
    $("action-note-label").textContent = a.label;
    $("action-note-hint").textContent = a.hint;
    const note = $("action-note");
    note.value = "";
    note.required = kind === "resolve";
    note.removeAttribute("aria-invalid");
    const err = $("action-error");
    err.hidden = true;
    err.textContent = "";
    $("action-token").value = "";
    $("action-token").removeAttribute("aria-invalid");
    $("action-token-field").hidden = true;
    const submit = $("action-submit");
    submit.textContent = a.submit;
    submit.disabled = false;
    submit.className = "btn btn-primary" + (kind === "resolve" ? " btn-danger" : "");
    $("action-dialog").showModal();
    note.focus();
  }

  async function submitAction(ev) {
    ev.preventDefault();
    if (!st.action) return;
    const { kind, id } = st.action;
    const note = $("action-note");
    const err = $("action-error");
    const text = note.value.trim();
    if (kind === "resolve" && !text) {
      err.textContent = "A note is required: say how the transaction was settled.";
      err.hidden = false;
      note.setAttribute("aria-invalid", "true");
      note.focus();
      return;
    }
    const submit = $("action-submit");
    submit.disabled = true;
    err.hidden = true;
    const typed = $("action-token-field").hidden ? "" : $("action-token").value.trim();
    try {
      const t = await request("v1/transactions/" + encodeURIComponent(id) + "/" + kind, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ note: text }),
        token: typed || st.opToken || st.token,
      });
      if (typed) {
        st.opToken = typed;
        store("txcoord.operatorToken", typed);
        $("signout").hidden = false;
      }
      st.recent.set(t.transactionId, t);
      st.action = null;
      $("action-dialog").close();
      // The card whose button opened the dialog is about to go: keep focus in the section.
      $("stuck-title").focus();
      toast(ACTIONS[kind].done + ": " + id + " is now " + (STATUS_LABEL[t.status] || t.status) + ".");
      refresh();
    } catch (e) {
      submit.disabled = false;
      if (e.status === 401) {
        const field = $("action-token-field");
        field.hidden = false;
        err.textContent = (typed ? "The token was refused: " : "This action needs a token with operator rights: ") + e.message;
        err.hidden = false;
        $("action-token").setAttribute("aria-invalid", "true");
        $("action-token").focus();
        return;
      }
      err.textContent = (e.status ? "The node refused (HTTP " + e.status + "): " : "Not sent: ") + e.message;
      err.hidden = false;
    }
  }

  let toastTimer = 0;
  function toast(msg, isError) {
    const t = $("toast");
    t.textContent = msg;
    t.classList.toggle("error", !!isError);
    t.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.remove("show"), 6000);
  }

  // ---------- wiring ----------

  function init() {
    $("action-form").addEventListener("submit", submitAction);
    $("signin-form").addEventListener("submit", submitSignin);
    $("signout").addEventListener("click", forgetTokens);
    $("signout").hidden = !(st.token || st.opToken);
    $("action-cancel").addEventListener("click", () => { st.action = null; $("action-dialog").close(); });
    $("action-dialog").addEventListener("close", () => { st.action = null; });
    $("txn-close").addEventListener("click", () => $("txn-dialog").close());
    $("txn-dialog").addEventListener("click", (e) => { if (e.target === e.currentTarget) e.currentTarget.close(); });
    const age = $("stuck-age");
    st.stuckAge = Number(age.value);
    age.addEventListener("change", () => { st.stuckAge = Number(age.value); refresh(); });
    const pause = $("pause");
    pause.addEventListener("click", () => {
      st.paused = !st.paused;
      pause.setAttribute("aria-pressed", String(st.paused));
      setUpdated();
      if (st.paused) clearTimeout(st.timer); else refresh();
    });
    const win = $("chart-window");
    st.chart.windowMs = Number(win.value);
    win.addEventListener("change", () => {
      st.chart.windowMs = Number(win.value);
      renderCharts();
      if (!st.chart.coveredFrom || st.chart.coveredFrom > Date.now() - st.chart.windowMs) backfill();
    });
    $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(true); });
    $("search-clear").addEventListener("click", clearSearch);
    $("search-by").addEventListener("change", updateSearchLabel);
    $("search-text").addEventListener("input", updateSearchLabel);
    const page = (ev) => {
      const hs = st.hist;
      if (!hs.q) return;
      hs.page = Math.max(0, hs.page + (ev.currentTarget.id === "page-next" ? 1 : -1));
      search(false);
    };
    $("page-prev").addEventListener("click", page);
    $("page-next").addEventListener("click", page);
    updateSearchLabel();
    document.addEventListener("visibilitychange", () => { if (!document.hidden && !st.paused) refresh(); });
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

// txcoord operations page: reads this node's HTTP API and redraws every REFRESH_MS.
//
// Transactions: GET /v1/transactions lists newest first, so each refresh reads one page of
// the newest (never the whole history). Transactions in flight come from the three
// in-progress status filters, stuck ones from GET /v1/stuck; any transaction the page
// still shows as unfinished and that no list mentions any more is read again by id, which
// is how "recent outcomes" learns how in-flight transactions ended.
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
      for (const [id, t] of fresh) st.recent.set(id, t);
      await settle(fresh);
      trimRecent();
      render(cluster, stuck.transactions, inflight, inflightMore);
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
  }

  // settle reads again, by id, every remembered transaction that was unfinished and that no
  // list of this round mentions: it has moved on (or was pruned from the log).
  async function settle(fresh) {
    const ids = [];
    for (const [id, t] of st.recent) if (!DONE.has(t.status) && !fresh.has(id)) ids.push(id);
    await Promise.all(ids.slice(0, 50).map(async (id) => {
      try {
        st.recent.set(id, await request("v1/transactions/" + encodeURIComponent(id)));
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

  // ---------- transaction detail ----------

  async function openTxn(id) {
    const dlg = $("txn-dialog");
    const body = $("txn-body");
    $("txn-title").textContent = "Transaction " + id;
    body.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    if (!dlg.open) dlg.showModal();
    try {
      const t = await request("v1/transactions/" + encodeURIComponent(id));
      st.recent.set(id, t);
      const rows = [
        ["Status", badge(t.status)], ["Decision", t.decision || "not decided yet"],
        ["Created", fmtTime(t.createdAt)], ["Phase-one deadline", fmtTime(t.deadline) + " (" + t.timeoutMs + " ms)"],
        ["Decided", fmtTime(t.decidedAt)], ["Finished", fmtTime(t.finishedAt)],
        ["Idempotency key", t.idempotencyKey || "–"], ["Raft index of last change", String(t.index)],
        ["Operator note", t.note || "–"],
      ];
      body.replaceChildren(...[
        h("dl", { class: "detail-grid" }, rows.map(([k, v]) => [h("dt", { "data-row": k }, k), h("dd", null, v)])),
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
    document.addEventListener("visibilitychange", () => { if (!document.hidden && !st.paused) refresh(); });
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

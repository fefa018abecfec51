// Live Overview and Queues: one server-sent event a second from /ui/api/stream, rendered with
// textContent only (names people typed are never parsed as HTML).
"use strict";
(function () {
  const root = document.querySelector("[data-live]");
  if (!root) return;
  const SVG = "http://www.w3.org/2000/svg";
  // The path prefix the gateway is served under behind a proxy (ingress.gateway.root_path), or "".
  const BASE = document.body.dataset.root || "";
  const HISTORY_S = 900;
  const history = {}; // deployment id -> [[t, waiting, in_flight], ...]

  // Below a cent: two significant digits, at most 8 places (as render.usd on the server).
  function subCent(v) {
    const text = v.toFixed(Math.min(8, Math.max(2, 1 - Math.floor(Math.log10(v)))));
    if (Number(text) === 0) return "<$0.00000001";
    const [whole, cents] = text.split(".");
    return `$${whole}.${cents.replace(/0+$/, "").padEnd(2, "0")}`;
  }

  const fmt = {
    num: (v, d = 0) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d })),
    ms: (v) => (v === null || v === undefined ? "–" : v >= 10 ? `${Math.round(v).toLocaleString("en-US")} ms` : `${v.toFixed(1)} ms`),
    pct: (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`),
    usd: (v) => (v === null || v === undefined ? "–" : v > 0 && v < 0.01 ? subCent(v) : `$${v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`),
    dur: (s) => {
      s = Math.max(0, Math.floor(s || 0));
      if (s < 60) return `${s}s`;
      if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
      return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    },
  };

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function badge(text, kind) { return el("span", text, `badge ${kind}`); }

  // Not cooling down: ready, unless its provider's key is not stored (it answers nothing).
  function stateBadge(d) {
    if (!d.key_missing) return badge("ready", "ok");
    const missing = badge("no key", "warn");
    missing.title = "its provider's key is not stored: store it under Secrets";
    return missing;
  }

  function setText(scope, selector, text) {
    scope.querySelectorAll(selector).forEach((node) => { node.textContent = text; });
  }

  // A share in red from its element's data-high, amber above 0 (as the page was rendered).
  function level(selector, ratio) {
    root.querySelectorAll(selector).forEach((node) => {
      const high = Number(node.dataset.high);
      node.classList.toggle("bad", ratio > 0 && ratio >= high);
      node.classList.toggle("warn", ratio > 0 && ratio < high);
    });
  }

  function renderStats(view) {
    const t = view.totals;
    setText(root, "[data-stat=requests_per_s]", fmt.num(t.requests_per_s, 1));
    setText(root, "[data-stat=error_ratio]", fmt.pct(t.error_ratio));
    setText(root, "[data-stat=refused_ratio]", fmt.pct(t.refused_ratio));
    level("[data-stat=error_ratio]", t.error_ratio);
    level("[data-stat=refused_ratio]", t.refused_ratio);
    setText(root, "[data-stat=p50_ms]", fmt.ms(t.p50_ms));
    setText(root, "[data-stat=p99_ms]", fmt.ms(t.p99_ms));
    setText(root, "[data-stat=ttft_p50_ms]", fmt.ms(t.ttft_p50_ms));
    setText(root, "[data-stat=tokens_per_s]", fmt.num(t.tokens_per_s, 0));
    setText(root, "[data-stat=spend_today_usd]", fmt.usd(view.spend_today_usd));
  }

  function renderRows(table, items, cells, empty) {
    const body = table && table.tBodies[0];
    if (!body) return;
    const rows = items.map((item) => {
      const tr = document.createElement("tr");
      cells(item).forEach(([content, cls]) => {
        const td = el("td", undefined, cls);
        if (content instanceof Node) td.appendChild(content); else td.textContent = content;
        tr.appendChild(td);
      });
      return tr;
    });
    if (!rows.length && empty) return; // keep the server-rendered empty state
    body.replaceChildren(...rows);
  }

  // The process's name over its version and wire-protocol level ("version ?" from a process
  // older than the field), marked when it is part of a broken upgrade order.
  function processCell(p, mixed) {
    const cell = document.createDocumentFragment();
    cell.append(p.instance.startsWith(p.component) ? p.instance : `${p.component} ${p.instance}`);
    const line = el("div", `${p.version || "version ?"} · protocol ${p.protocol || 1}`,
      `small ${mixed.has(`${p.component}/${p.instance}`) ? "warn-text" : "muted"}`);
    line.title = "package version, wire-protocol level";
    line.dataset.version = "";
    cell.appendChild(line);
    return cell;
  }

  function mixedIn(broken) {
    return new Set(broken.flatMap((v) => [...v.behind, ...v.ahead]).map((p) => `${p.component}/${p.instance}`));
  }

  // A warning while the versions mix against the documented upgrade order, one line each.
  function renderUpgradeOrder(broken) {
    const box = root.querySelector("[data-upgrade-order]");
    if (!box) return;
    box.classList.toggle("hidden", !broken.length);
    const list = box.querySelector("[data-upgrade-lines]");
    if (list) list.replaceChildren(...broken.map((v) => el("li", v.summary)));
  }

  function renderOverview(view) {
    renderStats(view);
    const broken = view.upgrade_order || [];
    renderUpgradeOrder(broken);
    const mixed = mixedIn(broken);
    renderRows(root.querySelector("[data-table=processes]"), view.processes, (p) => [
      [processCell(p, mixed)],
      [badge(p.healthy ? "healthy" : p.ready ? "silent" : "not ready", p.healthy ? "ok" : "bad")],
      [`${fmt.num(p.cpu_percent, 1)}%`, "num"], [`${fmt.num(p.rss_bytes / 1048576)} MB`, "num"], [fmt.dur(p.uptime_s), "num"],
      [`${fmt.dur(p.last_seen_s)} ago`, "num"],
    ], true);
    renderRows(root.querySelector("[data-table=deployments-summary]"), view.deployments, (d) => {
      const link = el("a", `${d.provider}/${d.model}`);
      link.href = `${BASE}/ui/queues#dep-${d.id}`;
      return [
        [link], [d.queue ? String(d.queue.waiting) : "?", "num"],
        [`${d.queue ? d.queue.in_flight : "?"} / ${d.concurrency}`, "num"],
        [fmt.num(d.rates.requests_per_s, 1), "num"], [fmt.ms(d.rates.p50_ms), "num"],
        [d.cooldown ? badge("cooling down", "warn") : stateBadge(d)],
      ];
    }, true);
  }

  // The cards in the stream's order: the deployments that need attention first, as on the
  // server-rendered page and in `switchyard top`; the cards of removed deployments last. Not
  // while a card's button is under the pointer or holds the focus, so nothing moves under a click.
  function reorderCards(deployments) {
    const cards = new Map([...root.querySelectorAll("[data-dep]")].map((card) => [card.dataset.dep, card]));
    const current = [...cards.values()];
    const listed = deployments.map((d) => cards.get(d.id)).filter(Boolean);
    const wanted = [...new Set([...listed, ...current])];
    if (!current.length || wanted.every((card, i) => card === current[i])) return;
    const active = document.activeElement;
    if (root.querySelector("[data-dep] button:hover") || (active && active !== document.body && root.contains(active))) return;
    const anchor = current[current.length - 1].nextSibling; // what follows the cards stays after them
    wanted.forEach((card) => root.insertBefore(card, anchor));
  }

  // A card for a deployment added since the page was rendered (another admin saved a route):
  // the page's blank card, the server's own markup, pointed at the deployment. It goes after
  // the other cards; reorderCards moves it to its place.
  function addCard(d) {
    const blank = root.querySelector("template[data-card]");
    if (!blank) return null;
    const card = blank.content.firstElementChild.cloneNode(true);
    card.id = `dep-${d.id}`;
    card.dataset.dep = d.id;
    const path = `${BASE}/ui/deployments/${encodeURIComponent(d.id)}`;
    card.querySelector("[data-f=end-cooldown]").setAttribute("action", `${path}/cooldown/end`);
    card.querySelector("[data-f=test]").setAttribute("action", `${path}/test`);
    card.querySelector("svg[data-chart]").dataset.chart = d.id;
    card.querySelector("[data-held]").setAttribute("aria-label", `Held requests of ${d.provider}/${d.model} by priority and tenant`);
    const cards = root.querySelectorAll("[data-dep]");
    const anchor = cards.length ? cards[cards.length - 1].nextSibling : root.querySelector("[data-empty]");
    root.insertBefore(card, anchor);
    return card;
  }

  // A deployment the stream no longer has left the route table (another admin deleted its
  // route or took it out of one): its card says so, shows no numbers and offers no buttons,
  // so nothing on it reads as current. It stays, last, until a reload, or comes back to life
  // when the deployment is added again.
  function markRemoved(card) {
    if (card.dataset.removed !== undefined) return;
    card.dataset.removed = "";
    card.classList.add("removed");
    ["waiting", "in_flight", "held", "redelivered", "oldest_wait_s", "requests_per_s", "latency"]
      .forEach((f) => setText(card, `[data-f=${f}]`, "–"));
    const gone = badge("removed from the route table", "bad");
    gone.title = "another admin deleted its route or took it out of one; reload to drop this card";
    card.querySelector("[data-f=state]").replaceChildren(gone);
    ["saturated", "end-cooldown", "test"].forEach((f) => card.querySelector(`[data-f=${f}]`).classList.add("hidden"));
    card.querySelector("[data-held]").classList.add("hidden");
    setText(card, "[data-f=test-result]", "");
  }

  function revive(card) {
    if (card.dataset.removed === undefined) return;
    delete card.dataset.removed;
    card.classList.remove("removed");
    card.querySelector("[data-f=test]").classList.remove("hidden");
  }

  function renderQueues(view) {
    const listed = new Set(view.deployments.map((d) => d.id));
    root.querySelectorAll("[data-dep]").forEach((card) => { if (!listed.has(card.dataset.dep)) markRemoved(card); });
    const empty = root.querySelector("[data-empty]");
    if (empty) empty.classList.toggle("hidden", listed.size > 0);
    view.deployments.forEach((d) => {
      const card = root.querySelector(`[data-dep="${CSS.escape(d.id)}"]`) || addCard(d);
      if (!card) return;
      revive(card);
      setText(card, "[data-f=name]", `${d.provider}/${d.model}`);
      setText(card, "[data-f=kind]", d.kind);
      setText(card, "[data-f=aliases]", d.aliases.join(", "));
      setText(card, "[data-f=id]", d.id);
      const q = d.queue;
      setText(card, "[data-f=waiting]", q ? String(q.waiting) : "?");
      setText(card, "[data-f=in_flight]", q ? String(q.in_flight) : "?");
      setText(card, "[data-f=concurrency]", String(q ? q.concurrency : d.concurrency));
      setText(card, "[data-f=redelivered]", q ? String(q.redelivered) : "?");
      setText(card, "[data-f=oldest_wait_s]", q ? fmt.dur(q.oldest_wait_s) : "?");
      setText(card, "[data-f=requests_per_s]", fmt.num(d.rates.requests_per_s, 1));
      setText(card, "[data-f=latency]", `${fmt.ms(d.rates.p50_ms)} / ${fmt.ms(d.rates.p99_ms)}`);
      const state = card.querySelector("[data-f=state]");
      if (state) {
        state.replaceChildren(d.cooldown
          ? badge(`cooling down ${fmt.dur(d.cooldown.seconds_left)} (${d.cooldown.status})`, "warn")
          : stateBadge(d));
      }
      const end = card.querySelector("[data-f=end-cooldown]");
      if (end) end.classList.toggle("hidden", !d.cooldown);
      setText(card, "[data-f=held]", q ? String(q.held) : "?");
      const saturated = card.querySelector("[data-f=saturated]");
      if (saturated) saturated.classList.toggle("hidden", !d.saturated);
      renderHeld(card.querySelector("[data-held]"), d.held || []);
      if (q) push(d.id, [view.at, q.waiting, q.in_flight]);
      draw(d.id);
    });
    reorderCards(view.deployments);
  }


  function renderHeld(table, held) {
    if (!table) return;
    table.classList.toggle("hidden", !held.length); // shown only while requests are held
    if (held.length) {
      renderRows(table, held, (h) => [
        [h.priority], [h.tenant], [String(h.waiting), "num"], [fmt.dur(h.oldest_wait_s), "num"],
      ]);
    }
  }

  function push(id, point) {
    const points = (history[id] = history[id] || []);
    if (!points.length || points[points.length - 1][0] < point[0]) points.push(point);
    const cutoff = point[0] - HISTORY_S;
    while (points.length && points[0][0] < cutoff) points.shift();
  }

  function draw(id) {
    const svg = root.querySelector(`svg[data-chart="${CSS.escape(id)}"]`);
    if (!svg) return;
    const points = history[id] || [];
    const W = 600, H = 120, P = 6;
    const now = points.length ? points[points.length - 1][0] : Date.now() / 1000;
    const max = Math.max(1, ...points.map((p) => Math.max(p[1], p[2])));
    // A fresh stack has seconds of history: show what there is (at least a minute), up to 15.
    const span = Math.min(HISTORY_S, Math.max(60, points.length ? now - points[0][0] : 60));
    const x = (t) => P + ((t - (now - span)) / span) * (W - 2 * P);
    const y = (v) => H - P - (v / max) * (H - 2 * P - 12);
    const line = (index, color) => {
      const path = document.createElementNS(SVG, "polyline");
      path.setAttribute("points", points.map((p) => `${x(p[0]).toFixed(1)},${y(p[index]).toFixed(1)}`).join(" "));
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", color);
      path.setAttribute("stroke-width", "2");
      path.setAttribute("stroke-linejoin", "round");
      return path;
    };
    const grid = document.createElementNS(SVG, "line");
    grid.setAttribute("x1", P); grid.setAttribute("x2", W - P);
    grid.setAttribute("y1", y(max)); grid.setAttribute("y2", y(max));
    grid.setAttribute("stroke", "#e5e7ef"); grid.setAttribute("stroke-dasharray", "4 4");
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", W - P); label.setAttribute("y", y(max) - 3);
    label.setAttribute("text-anchor", "end"); label.setAttribute("font-size", "10"); label.setAttribute("fill", "#6b7280");
    label.textContent = `max ${max}`;
    svg.replaceChildren(grid, label, line(1, "#f59e0b"), line(2, "#4f46e5"));
  }

  function updated(view, problem) {
    const box = root.querySelector("[data-problem]");
    if (box) { box.textContent = problem || ""; box.classList.toggle("hidden", !problem); }
    const stamp = root.querySelector("[data-updated]");
    if (stamp && view) stamp.textContent = `Last update ${new Date(view.at * 1000).toLocaleTimeString()}.`;
  }

  async function loadHistory() {
    if (root.dataset.live !== "queues") return;
    try {
      const resp = await fetch(`${BASE}/ui/api/history?seconds=${HISTORY_S}`, { credentials: "same-origin" });
      if (!resp.ok) return;
      const doc = await resp.json();
      Object.entries(doc.deployments).forEach(([id, points]) => {
        // By time, so a second load (the page shown again after a while hidden) fills the
        // gap without doubling the points the stream gave.
        const merged = new Map((history[id] || []).map((p) => [p[0], p]));
        points.forEach((p) => merged.set(p[0], [p[0], p[1], p[2]]));
        history[id] = [...merged.values()].sort((a, b) => a[0] - b[0]);
        draw(id);
      });
    } catch (e) { /* the live stream still fills the charts */ }
  }

  // A gateway that stalls without closing the connection (hung, stopped, its host swapping)
  // sends no event and EventSource reports no error: only the "Last update" stamp stops. So
  // the page counts itself: no event for a few of the stream's periods shows a warning, and
  // the next event clears it. The count starts when the stream is opened (`last` is null
  // until then): the Queues page loads its history first, and a slow answer is no stall.
  const PERIOD_S = Number(root.dataset.periodS) || 1;
  const STALE_S = Math.max(5, 5 * PERIOD_S);
  const stream = { last: null, closed: false, source: null, started: false, retry: null };
  const RETRY_S = 30; // a refused stream's wait when its answer says none

  function checkStale() {
    const box = root.querySelector("[data-stale]");
    if (!box) return;
    const quiet = stream.last === null ? 0 : Math.floor((Date.now() - stream.last) / 1000);
    const stale = !stream.closed && quiet >= STALE_S; // once closed, the page says so instead
    box.classList.toggle("hidden", !stale);
    box.textContent = stale
      ? `No update for ${quiet} s: the gateway may be stalled. The figures below are as of the last update; they move again when it answers.`
      : "";
  }

  function heard() {
    stream.last = Date.now();
    checkStale();
  }

  function connect() {
    stream.last = Date.now();
    const source = new EventSource(`${BASE}/ui/api/stream`);
    stream.source = source;
    source.addEventListener("overview", (event) => {
      const view = JSON.parse(event.data);
      if (root.dataset.live === "overview") renderOverview(view); else renderQueues(view);
      updated(view, "");
      root.dataset.live_at = String(view.at);
      heard();
    });
    source.addEventListener("problem", (event) => {
      updated(null, JSON.parse(event.data).error);
      heard();
    });
    source.onopen = () => { heard(); }; // opened again after a drop: the count starts anew
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) return; // EventSource tries again itself
      if (stream.source === source) stream.source = null;
      refused();
    };
  }

  // EventSource gives up for good on an answer other than a stream, and cannot read it. A
  // 429 (too many live pages open with this token: each gateway holds 50 per token, and a
  // page whose laptop slept held its slot until its connection was found dead) stopped
  // the page's live updates for good; now the page asks once why, waits the answer's
  // Retry-After and opens the stream again. Signed out, or any other answer, stops them.
  async function refused() {
    let resp = null;
    const asked = new AbortController();
    try {
      resp = await fetch(`${BASE}/ui/api/stream`, {
        credentials: "same-origin", redirect: "manual", signal: asked.signal,
        headers: { Accept: "text/event-stream" },
      });
    } catch (e) { /* the gateway does not answer (restarting): wait, then try again */ }
    asked.abort(); // an answered stream is not read here: its slot is given back
    const type = resp ? resp.headers.get("content-type") || "" : "";
    if (resp && resp.ok && type.startsWith("text/event-stream")) { retryIn(0); return; }
    if (resp && resp.status !== 429 && resp.status < 500) {
      stream.closed = true;
      checkStale();
      updated(null, "Live updates stopped (signed out, or the gateway refused them). Reload the page.");
      return;
    }
    const asks = resp ? Number(resp.headers.get("retry-after")) : NaN;
    const wait = Number.isFinite(asks) && asks >= 0 ? Math.min(asks, 300) : RETRY_S;
    updated(null, resp && resp.status === 429
      ? `Too many live pages are open with this token; live updates start again in ${Math.ceil(wait)} s.`
      : `The gateway does not answer; live updates start again in ${Math.ceil(wait)} s.`);
    retryIn(wait);
  }

  function retryIn(seconds) {
    stream.last = null; // a wait said as such is no stall
    checkStale();
    clearTimeout(stream.retry);
    stream.retry = setTimeout(() => {
      stream.retry = null;
      if (!document.hidden && !stream.source && !stream.closed) connect();
    }, seconds * 1000);
  }

  // An open stream keeps the session in use (the server counts each second of it), so a page
  // left open in a tab behind others, or a minimised window, kept its admin signed in until
  // the 24-hour limit. The stream runs only while the page is in view: closed when it is
  // hidden (no stall is counted then), opened again when it is shown. A session that ended
  // meanwhile refuses the new stream, and the page says live updates stopped.
  function pause() {
    clearTimeout(stream.retry); // a refused stream waiting to try again: tried when shown
    stream.retry = null;
    if (!stream.source) return;
    stream.source.close();
    stream.source = null;
    stream.last = null;
    checkStale();
  }

  function resume() {
    if (!stream.started || stream.source || stream.closed) return;
    loadHistory().then(() => { if (!document.hidden && !stream.source) connect(); });
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) pause(); else resume();
  });

  setInterval(checkStale, 1000);
  loadHistory().then(() => {
    stream.started = true;
    if (!document.hidden) connect();
  });
})();

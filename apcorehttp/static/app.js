// The apcore dashboard: plain script, no framework. Every value that comes
// from a task record reaches the page through textContent or an attribute,
// never as HTML.
"use strict";
(function () {
  const readOnly = document.documentElement.dataset.mode === "ro";
  const $ = (id) => document.getElementById(id);
  // The table pages with cursors: after is the cursor of the page shown
  // ("" for the first), next the one the server gave for the page after,
  // back the pages before it ({after, pos}), pos how many records the
  // pages before this one showed. status may be "scheduled" (pending, with
  // run_at in the future: a filter of the server's, not a state); key is
  // a unique key, matched exactly.
  const state = { status: "", module: "", key: "", order: "desc", limit: 50, after: "", next: "", back: [], pos: 0 };
  // The counts per state of the last summary: the table's "of N" (none
  // with a filter the server does not count by: module, scheduled, key).
  let counts = null;
  const rows = new Map(); // task id -> {tr, task}
  let detailId = null;
  let detailTask = null;
  // The newest record each event brought, with when it came. A fetched
  // record may be older than an event already shown (the server's list is
  // cached for up to a second, and the store may lag the manager by a
  // quarter of a second), so an event from the last two seconds, or newer
  // than the request, wins; and an ended record always beats an active one.
  // Events carry no result or error (the record has them): an event that
  // wins is laid over the fetched record.
  const fresh = new Map(); // task id -> {t, at}
  function newest(t, requestedAt) {
    const f = fresh.get(t.task_id);
    if (!f) return t;
    if (isActive(f.t.status) !== isActive(t.status)) return isActive(t.status) ? over(t, f.t) : t;
    return f.at > requestedAt - 2000 ? over(t, f.t) : t;
  }
  // over returns the record rec with the fields of the event ev.
  function over(rec, ev) { return rec ? Object.assign({}, rec, ev) : ev; }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmtTime(sec) {
    if (sec === null || sec === undefined) return "–";
    return new Date(sec * 1000).toLocaleString();
  }
  function ago(sec) {
    if (sec === null || sec === undefined) return "–";
    const d = Math.max(0, Date.now() / 1000 - sec);
    if (d < 60) return Math.floor(d) + " s ago";
    if (d < 3600) return Math.floor(d / 60) + " min ago";
    if (d < 86400) return Math.floor(d / 3600) + " h ago";
    return new Date(sec * 1000).toLocaleDateString();
  }
  // until is how long until sec, from now: "in 40 s", "in 5 min", "in 3 h",
  // "in 2 d".
  function until(sec) {
    const d = Math.max(0, sec - Date.now() / 1000);
    if (d < 60) return "in " + Math.ceil(d) + " s";
    if (d < 3600) return "in " + Math.round(d / 60) + " min";
    if (d < 86400) return "in " + Math.round(d / 3600) + " h";
    return "in " + Math.round(d / 86400) + " d";
  }
  // A pending task whose run_at is in the future is scheduled: it waits
  // for its time, not for a slot.
  function isScheduled(t) {
    return t.status === "pending" && typeof t.run_at === "number" && t.run_at > Date.now() / 1000;
  }
  // shown is the state the page shows: the record's, or "scheduled".
  function shown(t) { return isScheduled(t) ? "scheduled" : t.status; }
  function dur(t) {
    if (!t.started_at) return "–";
    const end = t.completed_at || Date.now() / 1000;
    const d = Math.max(0, end - t.started_at);
    if (d < 1) return Math.round(d * 1000) + " ms";
    if (d < 60) return d.toFixed(1) + " s";
    return Math.floor(d / 60) + " min " + Math.floor(d % 60) + " s";
  }
  function isActive(s) { return s === "pending" || s === "running"; }

  function setProgress(bar, t) {
    const p = t.status === "completed" ? 100 : (t.progress || 0);
    bar.firstChild.style.width = p + "%";
    bar.setAttribute("aria-valuenow", String(p));
    bar.classList.toggle("done", t.status === "completed");
    bar.title = t.progress_message ? p + "% – " + t.progress_message : p + "%";
  }

  // ---- table -------------------------------------------------------------
  function makeRow(t) {
    const tr = el("tr");
    tr.dataset.id = t.task_id;
    const cells = {
      status: el("td"), module: el("td", "module"), id: el("td", "c-id"), time: el("td", "c-time"),
      dur: el("td", "c-dur"), prog: el("td"), retry: el("td", "c-retry"), act: el("td", "c-act"),
    };
    cells.status.appendChild(el("span", "badge"));
    cells.status.appendChild(el("span", "when"));
    const bar = el("div", "progress");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.appendChild(el("div", "fill"));
    cells.prog.appendChild(bar);
    if (!readOnly) {
      const b = el("button", "danger cancel", "Cancel");
      b.type = "button";
      b.addEventListener("click", (ev) => { ev.stopPropagation(); cancelTask(tr.dataset.id, b); });
      cells.act.appendChild(b);
    }
    for (const k of Object.keys(cells)) tr.appendChild(cells[k]);
    tr.addEventListener("click", () => openDetail(tr.dataset.id));
    const r = { tr, cells, task: null };
    fillRow(r, t);
    return r;
  }

  // fillStatus shows the task's state, and a scheduled task's time: how
  // long until it, with the time itself as the tooltip.
  function fillStatus(r) {
    const t = r.task, st = shown(t);
    const badge = r.cells.status.firstChild, when = badge.nextSibling;
    badge.textContent = st;
    badge.className = "badge " + st;
    r.tr.dataset.status = t.status;
    r.tr.dataset.shown = st;
    when.textContent = st === "scheduled" ? until(t.run_at) : "";
    when.title = st === "scheduled" ? fmtTime(t.run_at) : "";
  }

  function fillRow(r, t) {
    r.task = t;
    const c = r.cells;
    fillStatus(r);
    c.module.textContent = t.module_id;
    c.module.title = t.module_id;
    c.id.textContent = t.task_id.slice(0, 8);
    c.id.title = t.task_id;
    c.time.textContent = ago(t.submitted_at);
    c.time.title = fmtTime(t.submitted_at);
    c.dur.textContent = dur(t);
    setProgress(c.prog.firstChild, t);
    c.retry.textContent = String((t.retry_count || 0) + (t.started_at ? 1 : 0));
    const b = c.act.firstChild;
    if (b) b.hidden = !isActive(t.status);
  }

  function render(tasks) {
    const body = $("rows");
    const keep = new Set(tasks.map((t) => t.task_id));
    for (const [id, r] of rows) if (!keep.has(id)) { r.tr.remove(); rows.delete(id); }
    let prev = null;
    for (const t of tasks) {
      let r = rows.get(t.task_id);
      if (r) fillRow(r, t); else { r = makeRow(t); rows.set(t.task_id, r); }
      const want = prev ? prev.nextSibling : body.firstChild;
      if (want !== r.tr) body.insertBefore(r.tr, want);
      prev = r.tr;
    }
    $("empty").hidden = tasks.length > 0;
    renderRange();
  }

  function renderRange() {
    const from = rows.size === 0 ? 0 : state.pos + 1;
    const to = state.pos + rows.size;
    const counted = !state.module && !state.key && state.status !== "scheduled";
    const total = counted && counts ? counts[state.status || "total"] : undefined;
    let text = rows.size === 0 ? "none" : from.toLocaleString() + "–" + to.toLocaleString();
    if (typeof total === "number") text = (rows.size === 0 ? "0" : text) + " of " + Math.max(total, to).toLocaleString();
    else if (state.next) text += " (more)";
    $("range").textContent = text;
    $("prev").disabled = state.back.length === 0;
    $("next").disabled = !state.next;
    $("prev").textContent = state.order === "desc" ? "‹ Newer" : "‹ Older";
    $("next").textContent = state.order === "desc" ? "Older ›" : "Newer ›";
  }

  // matches tells whether a record belongs in the table's filter. Events
  // carry no unique key: with a key filter, new tasks come with the
  // refresh that every event schedules.
  function matches(t) {
    const st = state.status === "scheduled" ? isScheduled(t) : !state.status || t.status === state.status;
    return st && (!state.module || t.module_id === state.module) && (!state.key || t.unique_key === state.key);
  }

  // ---- data --------------------------------------------------------------
  async function getJSON(url) {
    const res = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!res.ok) throw new Error(url + ": HTTP " + res.status);
    return res.json();
  }

  let pageSeq = 0;
  async function loadPage() {
    const seq = ++pageSeq;
    const requestedAt = performance.now();
    const q = new URLSearchParams({ order: state.order, limit: String(state.limit) });
    if (state.after) q.set("after", state.after);
    if (state.status) q.set("status", state.status);
    if (state.module) q.set("module", state.module);
    if (state.key) q.set("unique_key", state.key);
    try {
      const data = await getJSON("api/tasks?" + q);
      if (seq !== pageSeq) return;
      state.next = typeof data.next === "string" ? data.next : "";
      render((data.tasks || []).map((t) => newest(t, requestedAt)));
    } catch (e) { setLive(false, "cannot load tasks"); }
  }

  async function loadSummary() {
    try {
      const s = await getJSON("api/summary");
      counts = s.counts || null;
      renderRange();
      for (const k of ["total", "pending", "running", "completed", "failed", "cancelled"]) {
        $("count-" + k).textContent = (s.counts[k] || 0).toLocaleString();
      }
      const sel = $("f-module");
      const have = new Set(Array.from(sel.options).map((o) => o.value));
      for (const m of s.modules || []) {
        if (!have.has(m)) { const o = el("option", null, m); o.value = m; sel.appendChild(o); }
      }
      drawChart(s.chart);
    } catch (e) { /* the next refresh tries again */ }
  }

  function refresh() { loadPage(); loadSummary(); }

  // A burst of events refreshes the counts and the page at most once a
  // second (the server caches for a second anyway).
  let refreshTimer = null;
  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 1000);
  }

  // ---- chart -------------------------------------------------------------
  const svgNS = "http://www.w3.org/2000/svg";
  // niceScale returns ticks from 0 to a round top at or above max: steps of
  // 1, 2, 2.5 or 5 times a power of ten, four or five of them.
  function niceScale(max) {
    const raw = max / 4, pow = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * pow).find((s) => s >= raw);
    const top = Math.ceil(max / step - 1e-9) * step;
    const ticks = [];
    for (let v = 0; v <= top + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
    return { top: ticks[ticks.length - 1], ticks };
  }
  function tickText(v) { return Number(v.toPrecision(4)).toLocaleString(); }
  // drawTicks writes the labels of a scale beside the chart, each at the
  // height of its value (y in the chart's units, H high).
  function drawTicks(box, scale, y, unit, H) {
    while (box.firstChild) box.removeChild(box.firstChild);
    for (const v of scale.ticks) {
      const t = el("span", "tick", tickText(v) + (v === 0 ? "" : unit));
      t.dataset.value = String(v);
      t.style.top = (y(v) / H * 100).toFixed(2) + "%";
      box.appendChild(t);
    }
  }
  function drawChart(c) {
    const svg = $("chart");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (!c || !c.finished) return;
    const W = 600, H = 120, n = c.finished.length, bw = W / n;
    const rates = c.finished.map((k) => k / c.bucket_seconds);
    // Floors keep a quiet minute from looking busy: the bars scale to at
    // least 1 task/s, the wait line to at least half a second.
    // Each scale ends on a round value, with its ticks labelled: tasks
    // per second on the left, seconds of queue wait on the right.
    const rateScale = niceScale(Math.max(1, ...rates));
    const waitScale = niceScale(Math.max(0.5, ...c.wait_avg));
    const maxRate = rateScale.top, maxWait = waitScale.top;
    const rateY = (v) => H - (v / maxRate) * (H - 8);
    const waitY = (v) => H - 4 - (v / maxWait) * (H - 12);
    drawTicks($("chart-y-rate"), rateScale, rateY, "/s", H);
    drawTicks($("chart-y-wait"), waitScale, waitY, " s", H);
    for (const v of rateScale.ticks) {
      if (v === 0) continue;
      const g = document.createElementNS(svgNS, "line");
      g.setAttribute("class", "grid");
      g.setAttribute("x1", "0"); g.setAttribute("x2", String(W));
      g.setAttribute("y1", rateY(v).toFixed(1)); g.setAttribute("y2", rateY(v).toFixed(1));
      svg.appendChild(g);
    }
    const axis = document.createElementNS(svgNS, "line");
    axis.setAttribute("class", "axis");
    axis.setAttribute("x1", "0"); axis.setAttribute("x2", String(W));
    axis.setAttribute("y1", String(H - 0.5)); axis.setAttribute("y2", String(H - 0.5));
    svg.appendChild(axis);
    rates.forEach((r, i) => {
      if (r <= 0) return;
      const h = (r / maxRate) * (H - 8);
      const rect = document.createElementNS(svgNS, "rect");
      rect.setAttribute("class", "bar");
      rect.setAttribute("x", String(i * bw + 1));
      rect.setAttribute("y", String(H - h));
      rect.setAttribute("width", String(Math.max(1, bw - 2)));
      rect.setAttribute("height", String(h));
      svg.appendChild(rect);
    });
    const pts = c.wait_avg.map((w, i) => (i * bw + bw / 2).toFixed(1) + "," + (H - 4 - (w / maxWait) * (H - 12)).toFixed(1));
    const line = document.createElementNS(svgNS, "polyline");
    line.setAttribute("class", "wait");
    line.setAttribute("points", pts.join(" "));
    svg.appendChild(line);
    const last = rates.length > 1 ? rates[rates.length - 2] : 0; // the last bucket is still filling
    const peakRate = Math.max(0, ...rates), peakWait = Math.max(0, ...c.wait_avg);
    $("chart-rate").textContent = "finished " + last.toFixed(1) + "/s (peak " + peakRate.toFixed(1) + "/s)";
    $("chart-wait").textContent = "queue wait ≤ " + peakWait.toFixed(2) + " s avg";
    // The server reads at most a few thousand of the newest records for
    // the chart: say so when that cut the window short.
    $("chart-note").textContent = c.partial ? "from the newest " + c.records.toLocaleString() + " tasks (since " + new Date(c.from * 1000).toLocaleTimeString() + ")" : "";
  }

  // ---- detail ------------------------------------------------------------
  function pretty(v) {
    if (typeof v === "string") return v;
    try { return JSON.stringify(v, null, 2); } catch (e) { return String(v); }
  }

  function fillDetail(t) {
    detailTask = t;
    $("d-title").textContent = "Task " + t.task_id.slice(0, 8);
    const st = $("d-status");
    st.textContent = shown(t);
    st.className = "badge " + shown(t);
    $("d-module").textContent = t.module_id;
    setProgress($("d-progress"), t);
    $("d-progress-msg").textContent = t.progress_message || "";
    const dl = $("d-fields");
    while (dl.firstChild) dl.removeChild(dl.firstChild);
    const fields = [
      ["Task id", t.task_id], ["Submitted", fmtTime(t.submitted_at)], ["Started", fmtTime(t.started_at)],
      ["Ended", fmtTime(t.completed_at)], ["Duration", dur(t)],
      ["Retries", (t.retry_count || 0) + " of " + (t.max_retries || 0)],
      ["Progress", (t.progress || 0) + "%"],
    ];
    if (typeof t.run_at === "number") {
      fields.splice(2, 0, ["Run at", fmtTime(t.run_at) + (isScheduled(t) ? " (" + until(t.run_at) + ")" : "")]);
    }
    fields.push(["Priority", String(t.priority || 0)]);
    if (t.unique_key) fields.push(["Unique key", t.unique_key]);
    if (t.error_code) fields.push(["Error code", t.error_code]);
    for (const [k, v] of fields) { dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", null, v)); }
    $("d-error-box").hidden = !t.error;
    $("d-error").textContent = t.error || "";
    const hasResult = t.status === "completed" && ("result" in t || "result_error" in t);
    $("d-result-box").hidden = !hasResult;
    $("d-result").textContent = !hasResult ? "" : t.result_error ? "(" + t.result_error + ")" : pretty(t.result);
    $("d-cancel").hidden = readOnly || !isActive(t.status);
  }

  async function openDetail(id) {
    detailId = id;
    $("detail").hidden = false;
    const r = rows.get(id);
    if (r) fillDetail(r.task);
    const requestedAt = performance.now();
    try {
      const t = await getJSON("api/tasks/" + encodeURIComponent(id));
      if (detailId === id) fillDetail(newest(t, requestedAt));
    } catch (e) { /* keep what the table had */ }
    $("detail").dataset.fetched = id; // for tests: the record has come
  }
  async function refetchDetail(id) {
    const requestedAt = performance.now();
    try {
      const t = await getJSON("api/tasks/" + encodeURIComponent(id));
      if (detailId === id) fillDetail(newest(t, requestedAt));
    } catch (e) { /* keep what the event had */ }
  }
  function closeDetail() { detailId = null; detailTask = null; $("detail").hidden = true; }

  async function cancelTask(id, button) {
    if (readOnly) return;
    if (button) button.disabled = true;
    try {
      const res = await fetch("api/tasks/" + encodeURIComponent(id) + "/cancel", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Apcore-Request": "1" },
        body: "{}",
      });
      if (!res.ok) throw new Error("HTTP " + res.status);
    } catch (e) {
      setLive(false, "cancel failed");
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---- live events ---------------------------------------------------------
  function setLive(on, text) {
    const e = $("live");
    e.classList.toggle("on", on);
    e.classList.toggle("off", !on);
    e.textContent = text;
    document.body.dataset.live = on ? "1" : "0";
  }

  // onRecord takes an event: a record without its result and error, and
  // without the fields that are unset.
  function onRecord(t) {
    t.progress = t.progress || 0;
    t.progress_message = t.progress_message || "";
    t.error_code = t.error_code || "";
    fresh.set(t.task_id, { t, at: performance.now() });
    const r = rows.get(t.task_id);
    if (r) {
      const changed = r.task.status !== t.status;
      fillRow(r, over(r.task, t));
      if (changed) { r.tr.classList.remove("flash"); void r.tr.offsetWidth; r.tr.classList.add("flash"); }
    } else if (state.order === "desc" && state.back.length === 0 && matches(t) && isActive(t.status)) {
      // A new task: it belongs at the top of the newest-first first page.
      const nr = makeRow(t);
      rows.set(t.task_id, nr);
      $("rows").insertBefore(nr.tr, $("rows").firstChild);
      nr.tr.classList.add("flash");
      while (rows.size > state.limit) {
        const lastTr = $("rows").lastChild;
        rows.delete(lastTr.dataset.id);
        lastTr.remove();
      }
      $("empty").hidden = true;
      renderRange();
    }
    if (detailId === t.task_id) {
      fillDetail(over(detailTask, t));
      if (!isActive(t.status)) refetchDetail(t.task_id); // for the result or the error
    }
    scheduleRefresh();
  }

  function connect() {
    const es = new EventSource("api/events");
    es.onopen = () => { setLive(true, "live"); refresh(); };
    es.onmessage = (ev) => {
      let t;
      try { t = JSON.parse(ev.data); } catch (e) { return; }
      if (t && typeof t.task_id === "string") onRecord(t);
    };
    // More transitions than the server sends one by one: reload instead.
    es.addEventListener("resync", () => scheduleRefresh());
    es.onerror = () => { setLive(false, "reconnecting…"); };
  }

  // ---- controls --------------------------------------------------------------
  function setFilter(changes) {
    Object.assign(state, changes, { after: "", next: "", back: [], pos: 0 });
    $("f-status").value = state.status;
    $("f-module").value = state.module;
    $("f-key").value = state.key;
    for (const b of document.querySelectorAll(".count")) b.classList.toggle("active", b.dataset.status === state.status);
    loadPage();
  }

  $("f-status").addEventListener("change", (e) => setFilter({ status: e.target.value }));
  $("f-module").addEventListener("change", (e) => setFilter({ module: e.target.value }));
  $("f-order").addEventListener("change", (e) => setFilter({ order: e.target.value }));
  $("f-limit").addEventListener("change", (e) => setFilter({ limit: Number(e.target.value) }));
  for (const b of document.querySelectorAll(".count")) b.addEventListener("click", () => setFilter({ status: b.dataset.status }));
  // The key is searched when it is entered (Enter, or leaving the field),
  // not at each keystroke: each search may read 10,000 records.
  function setKey() {
    const k = $("f-key").value;
    if (k !== state.key) setFilter({ key: k });
  }
  $("f-key").addEventListener("change", setKey);
  $("f-key").addEventListener("search", setKey); // the field's clear button
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); setKey(); });
  $("prev").addEventListener("click", () => {
    const b = state.back.pop();
    if (!b) return;
    state.after = b.after;
    state.pos = b.pos;
    loadPage();
  });
  $("next").addEventListener("click", () => {
    if (!state.next) return;
    state.back.push({ after: state.after, pos: state.pos });
    state.pos += rows.size;
    state.after = state.next;
    loadPage();
  });
  $("d-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDetail(); });
  $("d-cancel").addEventListener("click", () => { if (detailId) cancelTask(detailId, $("d-cancel")); });

  // Other replicas' tasks that start and end between two polls of the
  // server send no event: refresh now and then anyway (cheap: a page costs
  // the server one page of the store, and the counts are shared).
  setInterval(() => { if (!document.hidden) scheduleRefresh(); }, 5000);

  // Times and durations of active tasks move on their own.
  setInterval(() => {
    for (const r of rows.values()) {
      r.cells.time.textContent = ago(r.task.submitted_at);
      if (r.task.run_at) fillStatus(r); // counts down, and ends when due
      if (isActive(r.task.status)) r.cells.dur.textContent = dur(r.task);
    }
    if (detailTask && isActive(detailTask.status)) fillDetail(detailTask);
    const old = performance.now() - 30000;
    for (const [id, f] of fresh) if (f.at < old) fresh.delete(id);
  }, 1000);

  $("f-order").value = state.order;
  $("f-limit").value = String(state.limit);
  setLive(false, "connecting…");
  refresh();
  connect();
})();

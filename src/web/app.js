// bog-agents-daemon dashboard: plain JavaScript, no dependencies, no build step.
// The token lives in this tab's sessionStorage and travels only in the Authorization header.
"use strict";
(() => {
  const KEY = "bog-agents-daemon.token";
  const $ = (sel, root = document) => root.querySelector(sel);
  const view = $("#view");
  const notice = $("#notice");
  let token = sessionStorage.getItem(KEY) || "";
  let timer = 0;       // refresh of the current view
  let healthTimer = 0; // refresh of the health bar
  let stream = null;   // AbortController of a live output stream
  let generation = 0;  // bumped on each navigation; late answers for old views are dropped

  // ---- DOM helpers: text only, never HTML strings (no injection from job names or output).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const enc = encodeURIComponent;

  // ---- Messages
  function say(msg, kind) {
    notice.textContent = msg || "";
    notice.className = "notice" + (kind === "info" ? " info" : "");
    notice.hidden = !msg;
  }

  // ---- The API
  class ApiError extends Error {
    constructor(status, msg) { super(msg); this.status = status; }
  }
  async function api(path, opts = {}) {
    const headers = Object.assign({ Authorization: "Bearer " + token }, opts.headers || {});
    let body;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    let r;
    try {
      r = await fetch(path, { method: opts.method || "GET", headers, body, cache: "no-store",
        credentials: "omit", referrerPolicy: "no-referrer", signal: opts.signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "The daemon does not answer (" + e.message + "). Is it running?");
    }
    if (r.status === 401) {
      signOut("The daemon refused this token (401 Unauthorized). Check it with `bog-agents-daemon token` and sign in again.");
      throw new ApiError(401, "unauthorized");
    }
    if (opts.raw) return r;
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (!r.ok) {
      const msg = data && data.error ? data.error : "HTTP " + r.status;
      throw new ApiError(r.status, msg);
    }
    return data;
  }

  // ---- Words and times
  const STATUS_WORD = { succeeded: "succeeded", failed: "failed", timed_out: "timed out",
    skipped: "skipped", interrupted: "interrupted", running: "running", queued: "queued" };
  const STATUS_MARK = { succeeded: "✓", failed: "✗", timed_out: "T", skipped: "–",
    interrupted: "!", running: "▶", queued: "…" };
  const statusWord = (s) => STATUS_WORD[s] || String(s);
  const live = (s) => s === "running" || s === "queued";

  function span(ms) {
    let s = Math.round(Math.abs(ms) / 1000);
    if (s < 60) return s + "s";
    const d = Math.floor(s / 86400); s -= d * 86400;
    const hr = Math.floor(s / 3600); s -= hr * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + "d " + hr + "h";
    if (hr) return hr + "h " + m + "m";
    return m + "m" + (s ? " " + s + "s" : "");
  }
  // Whole seconds as the CLI writes them: 1d, 2h30m, 45s.
  function compact(secs) {
    let s = Math.round(secs), out = "";
    for (const [u, n] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
      if (s >= n) { out += Math.floor(s / n) + u; s %= n; }
    }
    return out || "0s";
  }
  function relative(iso) {
    if (!iso) return "";
    const ms = Date.parse(iso) - Date.now();
    return ms >= 0 ? "in " + span(ms) : span(ms) + " ago";
  }
  const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const fmtShort = new Intl.DateTimeFormat(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });
  const local = (iso) => (iso ? fmt.format(new Date(iso)) : "—");
  function when(iso) {
    if (!iso) return "—";
    return h("time", { datetime: iso, title: iso }, local(iso) + " (" + relative(iso) + ")");
  }
  function duration(ms) {
    if (ms === null || ms === undefined) return "—";
    return ms < 1000 ? ms + " ms" : span(ms);
  }
  const pad = (n) => String(n).padStart(2, "0");
  function cronWords(expr) {
    const f = expr.trim().split(/\s+/);
    if (f.length !== 5) return null;
    const [mi, ho, dom, mon, dow] = f;
    const num = (x) => /^\d+$/.test(x);
    if (mi === "*" && ho === "*" && dom === "*" && mon === "*" && dow === "*") return "every minute";
    let m = /^\*\/(\d+)$/.exec(mi);
    if (m && ho === "*" && dom === "*" && mon === "*" && dow === "*") return "every " + m[1] + " minutes";
    if (num(mi) && ho === "*" && dom === "*" && mon === "*" && dow === "*") return "hourly at :" + pad(mi);
    if (num(mi) && num(ho) && dom === "*" && mon === "*") {
      const at = pad(ho) + ":" + pad(mi);
      if (dow === "*") return "daily at " + at;
      if (dow === "1-5") return "weekdays at " + at;
      const days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
      if (num(dow) && +dow <= 7) return days[+dow] + "s at " + at;
    }
    if (num(mi) && num(ho) && num(dom) && mon === "*" && dow === "*") return "monthly on day " + dom + " at " + pad(ho) + ":" + pad(mi);
    return null;
  }
  function triggerWords(t) {
    switch (t.type) {
      case "cron": {
        const w = cronWords(t.cron);
        const tz = t.timezone ? " (" + t.timezone + ")" : " (UTC)";
        return (w ? w + " — cron " : "cron ") + t.cron + tz;
      }
      case "interval": return "every " + span(t.seconds * 1000);
      case "file_change": return "when " + t.patterns.join(", ") + " change" + (t.root ? " under " + t.root : "");
      case "webhook": {
        const parts = ["on POST " + t.path];
        if (t.scheme) parts.push("signed the " + t.scheme + " way");
        if (t.events && t.events.length) parts.push("for " + t.events.join(", "));
        if (t.match) parts.push("when " + ruleWords(t.match));
        return parts.join(" ");
      }
      case "git_push":
        return "on a push to " + t.branch + " of " + t.repo +
          (t.checkout ? ", in a fresh checkout" + (t.keep_checkout_on_failure ? " (kept when the run fails)" : "") : "");
      default: return t.type;
    }
  }
  // A webhook filter's match rule in one line, as `job list` writes it.
  function ruleWords(r) {
    if (!r || typeof r !== "object") return String(r);
    const val = (v) => (typeof v === "string" ? v : JSON.stringify(v));
    if (Array.isArray(r.all)) return "(" + r.all.map(ruleWords).join(" & ") + ")";
    if (Array.isArray(r.any)) return "(" + r.any.map(ruleWords).join(" | ") + ")";
    if (r.not !== undefined) return "!" + ruleWords(r.not);
    if (r.equals !== undefined) return r.path + "=" + val(r.equals);
    if (r.regex !== undefined) return r.path + "~=" + val(r.regex);
    if (Array.isArray(r.in)) return r.path + " in [" + r.in.map(val).join(",") + "]";
    if (r.exists !== undefined) return r.path + (r.exists ? " exists" : " absent");
    return JSON.stringify(r);
  }
  // The dead-man's switch (`expect`) and the run budgets' use (`budget_use`) in words.
  function expectWords(e) {
    if (!e) return null;
    if (e.within_seconds !== undefined) return "a successful run at least every " + compact(e.within_seconds);
    if (e.after_slot !== undefined) return "a successful run within " + compact(e.after_slot) + " of each cron slot";
    return JSON.stringify(e);
  }
  function budgetWords(b) {
    if (!b) return null;
    const parts = [];
    for (const [k, per] of [["max_runs_per_hour", "hour"], ["max_runs_per_day", "day"]]) {
      if (b[k]) parts.push(b[k].used + " of " + b[k].max + " runs this " + per);
    }
    return parts.length ? parts.join(", ") : null;
  }
  function runTrigger(tr) {
    if (!tr || typeof tr !== "object") return "—";
    return tr.type || "—";
  }
  function statusEl(s) {
    return h("span", { class: "status s-" + s }, statusWord(s));
  }

  // ---- Sign in / out
  function showLogin(msg) {
    stopAll();
    view.replaceChildren();
    $("#nav").hidden = true;
    $("#health").hidden = true;
    $("#login").hidden = false;
    say(msg || "");
    $("#token").focus();
  }
  function signOut(msg) {
    token = "";
    sessionStorage.removeItem(KEY);
    showLogin(msg);
  }
  $("#login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("#token");
    token = input.value.trim();
    if (!token) return;
    try {
      await api("/health");
    } catch (e) {
      if (e.status !== 401) say(e.message);
      return;
    }
    sessionStorage.setItem(KEY, token);
    input.value = "";
    $("#login").hidden = true;
    say("");
    route();
  });
  $("#signout").addEventListener("click", () => signOut("Signed out: the token is forgotten in this tab."));

  // ---- Health bar
  async function health() {
    try {
      const [hl, m] = await Promise.all([api("/health"), api("/metrics")]);
      const items = [
        ["version", hl.version],
        ["uptime", span(hl.uptime_seconds * 1000)],
        ["jobs", hl.jobs],
        ["running", m.runs_running],
        ["queued", m.runs_queued],
        ["workers", hl.workers],
        ["runs started", m.runs_started_total],
        ["succeeded", m.runs_succeeded_total],
        ["failed", m.runs_failed_total],
        ["timed out", m.runs_timed_out_total],
        ["dispatch errors", m.dispatch_errors_total],
      ];
      $("#health-list").replaceChildren(...items.filter(([, v]) => v !== undefined).map(([k, v]) =>
        h("div", { dataset: { metric: k } }, h("dt", { text: k }), h("dd", { text: String(v) }))));
      $("#health").hidden = false;
    } catch (e) {
      if (e.status !== 401) $("#health-list").replaceChildren(h("div", {}, h("dt", { text: "health" }), h("dd", { text: e.message })));
    }
  }

  // ---- Routing: #/jobs, #/jobs/<id>, #/jobs/<id>/runs/<run>, #/schedule
  function stopAll() {
    clearTimeout(timer);
    clearInterval(healthTimer);
    healthTimer = 0;
    if (stream) { stream.abort(); stream = null; }
    generation++;
  }
  function route() {
    if (!token) { showLogin(); return; }
    const hash = location.hash || "#/jobs";
    if (!hash.startsWith("#/")) return; // e.g. the skip link
    stopAll();
    $("#login").hidden = true;
    $("#nav").hidden = false;
    say("");
    health();
    healthTimer = setInterval(health, 5000);
    const parts = hash.slice(2).split("/").map(decodeURIComponent);
    const section = parts[0] === "schedule" ? "schedule" : "jobs";
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.view === section) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const gen = generation;
    if (parts[0] === "schedule") return scheduleView(gen);
    if (parts[0] === "jobs" && parts[1] && parts[2] === "runs" && parts[3]) return runView(gen, parts[1], parts[3]);
    if (parts[0] === "jobs" && parts[1]) return runsView(gen, parts[1]);
    return jobsView(gen);
  }
  window.addEventListener("hashchange", () => { route(); $("#main").focus({ preventScroll: true }); });
  // Re-renders keep keyboard focus on the control that had it.
  let pendingFocus = null; // a control to focus once the view has been drawn again
  function keepFocus(render) {
    const key = pendingFocus || (document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null);
    pendingFocus = null;
    render();
    if (key) { const el = view.querySelector('[data-key="' + CSS.escape(key) + '"]'); if (el) el.focus(); }
  }
  function again(gen, fn, ms) {
    if (gen !== generation) return;
    clearTimeout(timer);
    timer = setTimeout(() => { if (gen === generation) fn(); }, ms);
  }
  function failed(gen, e) {
    if (gen !== generation || e.status === 401 || e.name === "AbortError") return;
    say(e.message);
  }

  // ---- Jobs view
  let filterText = "";
  async function jobsView(gen) {
    document.title = "Jobs · bog-agents-daemon";
    const filter = h("input", { id: "filter", type: "search", value: filterText, placeholder: "name contains…", autocomplete: "off" });
    const list = h("ul", { class: "jobs", id: "jobs", "aria-live": "off" });
    const count = h("p", { class: "fires", id: "jobs-count", "aria-live": "polite" });
    filter.addEventListener("input", () => { filterText = filter.value; applyFilter(list, count); });
    view.replaceChildren(
      h("h1", { text: "Jobs" }),
      h("div", { class: "toolbar" }, h("label", { for: "filter" }, "Filter by name", filter)),
      count, list, legend());
    let runsCache = new Map();
    async function load() {
      try {
        const jobs = await api("/jobs");
        const runs = await Promise.all(jobs.map((j) => api("/jobs/" + enc(j.id) + "/runs?limit=30").catch(() => [])));
        if (gen !== generation) return;
        runsCache = new Map(jobs.map((j, i) => [j.id, runs[i]]));
        keepFocus(() => {
          list.replaceChildren(...jobs.map((j) => jobItem(j, runsCache.get(j.id) || [], gen)));
          if (!jobs.length) list.append(h("li", {}, "No jobs yet: create one with POST /jobs or `bog-agents-daemon job create`."));
          applyFilter(list, count);
        });
        const anyLive = runs.some((rs) => rs.some((r) => live(r.status)));
        again(gen, load, anyLive ? 1500 : 5000);
      } catch (e) {
        failed(gen, e);
        again(gen, load, 5000);
      }
    }
    load();
  }
  function applyFilter(list, count) {
    const q = filterText.trim().toLowerCase();
    let shown = 0, all = 0;
    for (const li of list.querySelectorAll("li.job")) {
      all++;
      const ok = !q || li.dataset.name.toLowerCase().includes(q);
      li.hidden = !ok;
      if (ok) shown++;
    }
    count.textContent = q ? shown + " of " + all + " jobs match" : all + (all === 1 ? " job" : " jobs");
  }
  function legend() {
    return h("ul", { class: "legend", "aria-label": "Run colours" },
      Object.keys(STATUS_WORD).map((s) => h("li", {}, h("span", { class: "cell s-" + s, "aria-hidden": "true" }, STATUS_MARK[s]), statusWord(s))));
  }
  function jobItem(j, runs, gen) {
    const url = "#/jobs/" + enc(j.id);
    const last = runs[0];
    const strip = h("ol", { class: "strip", "aria-label": "Last " + runs.length + " runs, newest first" },
      runs.map((r) => h("li", {}, h("a", {
        class: "cell s-" + r.status, href: url + "/runs/" + enc(r.id),
        title: statusWord(r.status) + " · " + local(r.started_at || r.queued_at),
        "aria-label": statusWord(r.status) + ", " + local(r.started_at || r.queued_at),
      }, STATUS_MARK[r.status] || "?"))));
    const runBtn = h("button", { type: "button", class: "primary", dataset: { key: "run:" + j.id, action: "run" },
      "aria-label": "Run " + j.name + " now" }, "Run now");
    runBtn.addEventListener("click", async () => {
      runBtn.disabled = true;
      try {
        const r = await api("/jobs/" + enc(j.id) + "/run", { method: "POST" });
        location.hash = url + "/runs/" + enc(r.run_id);
      } catch (e) { failed(gen, e); runBtn.disabled = false; }
    });
    const toggle = h("button", { type: "button", dataset: { key: "toggle:" + j.id, action: "toggle" },
      "aria-label": (j.enabled ? "Disable " : "Enable ") + j.name }, j.enabled ? "Disable" : "Enable");
    toggle.addEventListener("click", async () => {
      toggle.disabled = true;
      try {
        await api("/jobs/" + enc(j.id), { method: "PATCH", json: { enabled: !j.enabled } });
        pendingFocus = "toggle:" + j.id;
        route();
      } catch (e) { failed(gen, e); toggle.disabled = false; }
    });
    return h("li", { class: "job" + (j.enabled ? "" : " disabled"), dataset: { name: j.name, id: j.id } },
      h("div", {},
        h("h2", {}, h("a", { href: url }, j.name),
          h("span", { class: "state " + (j.enabled ? "on" : "off") }, j.enabled ? "enabled" : "disabled")),
        h("p", { class: "meta" }, j.triggers.map(triggerWords).join("; ") || "no triggers (manual runs only)"),
        h("p", { class: "meta" }, "Next fire: ", j.next_fire_at ? when(j.next_fire_at) : (j.enabled ? "none planned" : "— (disabled)"),
          last ? h("span", {}, " · last run: ", statusEl(last.status), " ", relative(last.finished_at || last.started_at || last.queued_at)) : " · no runs yet")),
      h("div", { class: "actions" }, runBtn, toggle),
      h("div", { class: "strip-wrap" }, runs.length ? strip : null));
  }

  // ---- Runs view (one job)
  let runFilter = "";
  async function runsView(gen, id) {
    const body = h("div", {});
    const pick = h("select", { id: "run-filter" },
      h("option", { value: "" }, "all statuses"),
      Object.keys(STATUS_WORD).map((k) => h("option", { value: k }, statusWord(k))));
    pick.value = runFilter;
    const applyRunFilter = () => {
      for (const tr of body.querySelectorAll("tbody tr")) tr.hidden = !!runFilter && tr.dataset.status !== runFilter;
    };
    pick.addEventListener("change", () => { runFilter = pick.value; applyRunFilter(); });
    view.replaceChildren(h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
      h("div", { class: "toolbar" }, h("label", { for: "run-filter" }, "Status", pick)), body);
    async function load() {
      try {
        const [j, runs] = await Promise.all([api("/jobs/" + enc(id)), api("/jobs/" + enc(id) + "/runs?limit=100")]);
        if (gen !== generation) return;
        document.title = j.name + " · bog-agents-daemon";
        const rows = runs.map((r) => h("tr", { dataset: { run: r.id, status: r.status } },
          h("td", {}, h("a", { href: "#/jobs/" + enc(id) + "/runs/" + enc(r.id) }, statusEl(r.status))),
          h("td", {}, runTrigger(r.trigger)),
          h("td", {}, r.started_at ? when(r.started_at) : "queued " + relative(r.queued_at)),
          h("td", { class: "num" }, duration(r.duration_ms)),
          h("td", { class: "num" }, r.exit_code === null ? (r.signal || "—") : String(r.exit_code)),
          h("td", {}, [r.error].concat(r.dispatch_errors.map((d) => d.target + ": " + d.error)).filter(Boolean).join("; ") || "—")));
        keepFocus(() => body.replaceChildren(
          h("h1", {}, j.name, h("span", { class: "state " + (j.enabled ? "on" : "off") }, j.enabled ? "enabled" : "disabled")),
          h("dl", { class: "facts" },
            h("dt", {}, "Triggers"), h("dd", { id: "job-triggers" }, j.triggers.map(triggerWords).join("; ") || "none"),
            h("dt", {}, "Next fire"), h("dd", {}, j.next_fire_at ? when(j.next_fire_at) : "—"),
            j.expect ? [h("dt", {}, "Expect"), h("dd", { id: "job-expect" }, expectWords(j.expect))] : null,
            budgetWords(j.budget_use) ? [h("dt", {}, "Run budget"), h("dd", { id: "job-budget" }, budgetWords(j.budget_use))] : null,
            h("dt", {}, "Agent"), h("dd", { class: "mono" }, (j.agent && j.agent.command || []).join(" ")),
            h("dt", {}, "Id"), h("dd", { class: "mono" }, j.id)),
          h("h2", {}, "Runs (" + runs.length + ")"),
          runs.length ? h("div", { class: "table-wrap" }, h("table", {},
            h("caption", { class: "sr" }, "Runs of " + j.name + ", newest first"),
            h("thead", {}, h("tr", {}, ["Status", "Trigger", "Started", "Duration", "Exit", "Errors"].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, rows))) : h("p", {}, "No runs yet.")));
        applyRunFilter();
        again(gen, load, runs.some((r) => live(r.status)) ? 1500 : 5000);
      } catch (e) { failed(gen, e); again(gen, load, 5000); }
    }
    load();
  }

  // ---- One run, live while it runs
  async function runView(gen, id, runId) {
    const path = "/jobs/" + enc(id) + "/runs/" + enc(runId);
    const facts = h("dl", { class: "facts", id: "run-facts" });
    const out = h("pre", { class: "out", id: "output", tabindex: "0", "aria-label": "Output" });
    const errBox = h("div", { id: "run-error" });
    const liveNote = h("p", { class: "live", id: "live", "aria-live": "polite" });
    const follow = h("input", { type: "checkbox", id: "follow", checked: true });
    view.replaceChildren(
      h("p", {}, h("a", { href: "#/jobs/" + enc(id) }, "← Runs of this job")),
      h("h1", { id: "run-title" }, "Run " + runId),
      facts, errBox,
      h("div", { class: "toolbar" }, h("h2", {}, "Output"),
        h("label", { for: "follow" }, h("span", {}, follow, " Follow the end"))),
      liveNote, out);
    function show(r) {
      document.title = r.job_name + " " + statusWord(r.status) + " · bog-agents-daemon";
      $("#run-title").replaceChildren(r.job_name + " · ", statusEl(r.status));
      facts.replaceChildren(
        h("dt", {}, "Status"), h("dd", { id: "run-status" }, statusEl(r.status)),
        h("dt", {}, "Trigger"), h("dd", {}, runTrigger(r.trigger)),
        h("dt", {}, "Queued"), h("dd", {}, when(r.queued_at)),
        h("dt", {}, "Started"), h("dd", {}, when(r.started_at)),
        h("dt", {}, "Finished"), h("dd", {}, when(r.finished_at)),
        h("dt", {}, "Duration"), h("dd", {}, duration(r.duration_ms)),
        h("dt", {}, "Exit code"), h("dd", {}, r.exit_code === null ? (r.signal ? "signal " + r.signal : "—") : String(r.exit_code)),
        h("dt", {}, "Attempts"), h("dd", {}, String(r.attempts)),
        h("dt", {}, "Output bytes"), h("dd", {}, live(r.status) ? "— (counted at the end)" : String(r.output_bytes) + (r.output_truncated ? " (truncated)" : "")),
        h("dt", {}, "Run id"), h("dd", { class: "mono" }, r.id));
      errBox.replaceChildren(...[
        r.error ? h("div", {}, h("h2", {}, "Error"), h("pre", { class: "out err", id: "error" }, r.error)) : null,
        r.dispatch_errors.length ? h("div", {}, h("h2", {}, "Dispatch errors"),
          h("ul", { id: "dispatch-errors" }, r.dispatch_errors.map((d) => h("li", {}, h("strong", {}, d.target), ": " + d.error)))) : null,
        r.stderr_tail ? h("div", {}, h("h2", {}, "Standard error (tail)"), h("pre", { class: "out", id: "stderr" }, r.stderr_tail)) : null,
      ].filter(Boolean));
    }
    function append(text) {
      const atEnd = out.scrollHeight - out.scrollTop - out.clientHeight < 24;
      out.append(text);
      if (follow.checked || atEnd) out.scrollTop = out.scrollHeight;
    }
    try {
      let r = await api(path);
      if (gen !== generation) return;
      show(r);
      if (!live(r.status)) { out.textContent = r.output; return; }
      liveNote.textContent = "Live: output appears as the agent writes it.";
      health();
      stream = new AbortController();
      const resp = await api(path + "/output", { raw: true, signal: stream.signal });
      if (!resp.ok) throw new ApiError(resp.status, "cannot follow the output (HTTP " + resp.status + ")");
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let poll = setInterval(async () => {
        try { const x = await api(path); if (gen === generation) { show(x); health(); } } catch (_) { /* shown at the end */ }
      }, 2000);
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          if (gen !== generation) return;
          append(dec.decode(value, { stream: true }));
        }
        append(dec.decode());
      } finally { clearInterval(poll); }
      if (gen !== generation) return;
      // The stream ends with the run; the record has its final state (wait for it to land).
      for (let i = 0; i < 50; i++) {
        r = await api(path);
        if (!live(r.status)) break;
        await new Promise((res) => setTimeout(res, 200));
      }
      if (gen !== generation) return;
      show(r);
      health();
      liveNote.textContent = "The run ended: " + statusWord(r.status) + ".";
      if (r.output.length >= out.textContent.length) out.textContent = r.output;
    } catch (e) { failed(gen, e); }
  }

  // ---- Schedule view
  async function scheduleView(gen) {
    document.title = "Schedule · bog-agents-daemon";
    const tl = h("div", { class: "timeline", id: "timeline" });
    const zoneGuess = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    const cron = h("input", { id: "cron", value: "0 9 * * 1-5", required: true, autocomplete: "off", spellcheck: "false" });
    const tz = h("input", { id: "tz", value: zoneGuess, autocomplete: "off", spellcheck: "false" });
    const count = h("input", { id: "count", type: "number", min: "1", max: "100", value: "5" });
    const result = h("div", { id: "preview-result", "aria-live": "polite" });
    const form = h("form", { class: "preview", id: "preview" },
      h("h2", {}, "Preview a cron expression"),
      h("div", { class: "toolbar" },
        h("label", { for: "cron" }, "Cron expression", cron),
        h("label", { for: "tz" }, "Time zone (IANA)", tz),
        h("label", { for: "count" }, "How many", count),
        h("button", { type: "submit" }, "Preview")),
      result);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const q = "cron=" + enc(cron.value) + "&timezone=" + enc(tz.value) + "&count=" + enc(count.value || "5");
      try {
        const p = await api("/schedule/preview?" + q);
        const words = cronWords(p.cron);
        result.replaceChildren(
          h("p", {}, (words ? words + " · " : "") + "next " + p.fires.length + " in " + p.timezone + ":"),
          h("ol", {}, p.fires.map((f) => h("li", {}, h("time", { datetime: f, class: "mono" }, f), " — your time: " + local(f) + " (" + relative(f) + ")"))));
      } catch (e) {
        if (e.status !== 401) result.replaceChildren(h("p", { class: "notice", role: "alert" }, e.message));
      }
    });
    view.replaceChildren(h("h1", {}, "Schedule: the next 24 hours"),
      h("p", { class: "fires" }, "Cron and interval triggers of enabled jobs, in your time zone (" + zoneGuess + ")."),
      tl, form);
    async function load() {
      try {
        const s = await api("/schedule?hours=24");
        if (gen !== generation) return;
        const from = Date.parse(s.from), until = Date.parse(s.until), width = until - from;
        const axis = h("div", { class: "tl-axis", "aria-hidden": "true" });
        for (let i = 0; i <= 4; i++) {
          const t = from + (width * i) / 4;
          const lab = h("span", {}, i === 0 ? "now" : fmtShort.format(new Date(t)));
          lab.style.left = Math.min(96, Math.max(4, i * 25)) + "%";
          axis.append(lab);
        }
        const rows = s.jobs.map((j) => {
          const track = h("div", { class: "tl-track", "aria-hidden": "true" });
          if (j.truncated || j.fires.length > 200) {
            track.append(h("div", { class: "tl-band" }));
          } else {
            for (const f of j.fires) {
              const m = h("div", { class: "tl-mark", title: local(f) });
              m.style.left = (((Date.parse(f) - from) / width) * 100).toFixed(2) + "%";
              track.append(m);
            }
          }
          const firstFew = j.fires.slice(0, 3).map((f) => fmtShort.format(new Date(f))).join(", ");
          const summary = j.fires.length === 0 ? "no firings in the next 24 h"
            : (j.truncated ? "more than " : "") + j.fires.length + (j.fires.length === 1 ? " firing" : " firings") + ": " + firstFew + (j.fires.length > 3 ? ", …" : "");
          return h("div", { class: "tl-row", dataset: { job: j.name } },
            h("div", { class: "tl-name" }, h("a", { href: "#/jobs/" + enc(j.id) }, j.name)),
            h("div", {}, track, h("p", { class: "fires" }, summary)));
        });
        tl.replaceChildren(rows.length ? h("div", { class: "tl-row" }, h("div", {}), axis) : h("p", {}, "No cron or interval jobs are enabled."), ...rows);
        again(gen, load, 30000);
      } catch (e) { failed(gen, e); again(gen, load, 30000); }
    }
    load();
  }

  $("#signout").hidden = false;
  route();
})();

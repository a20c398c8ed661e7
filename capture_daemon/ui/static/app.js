// understudy dashboard. Every piece of trace text goes into the page as a text node (el() below,
// textContent): nothing from a trace is ever parsed as markup (no HTML-string APIs anywhere here).
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const view = document.getElementById("view");
const state = { filter: {}, feed: [], selected: new Set() };

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
    else node.setAttribute(key, String(value));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF }, body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

const traceLink = (id) => "#/trace/" + encodeURIComponent(id);
const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "");
function verdictBadge(t) {
  const word = t.accepted === null || t.accepted === undefined ? "unscored" : t.accepted ? "accepted" : "rejected";
  return el("span", { class: "badge " + word, title: t.human === null || t.human === undefined ? "by the rules" : "by hand" },
    word + (t.human === null || t.human === undefined ? "" : " by hand"));
}
function stat(id, label, value, extra) {
  return el("div", { class: "stat " + (extra || "") }, el("div", { class: "num", id }, String(value)), el("div", { class: "label" }, label));
}

// --- Live -----------------------------------------------------------------------------------

function feedItem(t) {
  return el("li", { data: { traceId: t.trace_id } },
    el("span", { class: "when" }, when(t.started_at)), verdictBadge(t),
    el("a", { href: traceLink(t.trace_id), class: "prompt" }, t.prompt),
    el("span", { class: "muted" }, t.workflow));
}

async function renderLive() {
  const [status, recent] = await Promise.all([getJSON("/api/status"), getJSON("/api/traces")]);
  if (!state.feed.length) state.feed = recent.traces.slice(0, 30);
  const t = status.traces, s = status.spool, h = status.health || {};
  const problems = el("section", { id: "problems" }, el("h2", {}, "Health"),
    el("p", { id: "daemon-state", class: status.daemon.running ? "ok" : "bad" },
      status.daemon.running ? `daemon running (pid ${status.daemon.pid})` : "daemon not running — `capture-daemon start`"),
    status.capture.paused ? el("p", { class: "warn" }, "capture paused — `capture-daemon resume`") : null,
    status.capture.hooks_registered.length ? null
      : el("p", { class: "bad", id: "hooks-problem" }, "no hooks registered — `capture-daemon hooks install`"),
    status.capture.hooks_switched_off ? el("p", { class: "bad", id: "hooks-problem" },
      `hooks switched off by ${status.capture.hooks_switched_off}: nothing is captured — remove that setting`) : null,
    status.capture.hooks_claude_ignores ? el("p", { class: "bad", id: "hooks-problem" },
      "hooks not run: " + status.capture.hooks_claude_ignores) : null,
    status.config?.problem ? el("p", { class: "bad", id: "config-problem" },
      "config.toml is broken: " + status.config.problem + " — fix it" + (status.daemon.running ? "" : ", then `capture-daemon start`")) : null,
    h.problem ? el("p", { class: "bad", id: "health-problem" }, "capture is failing: " + h.problem) : null,
    (h.stuck || []).map((x) => el("p", { class: "warn" }, `stuck trace ${x.trace_id}: ${x.reason}`)),
    t.problem ? el("p", { class: "bad" }, "traces.db: " + t.problem.error) : null,
    el("h3", {}, `Quarantined (${s.quarantined})`),
    el("ul", { id: "quarantine" }, s.quarantine.map((q) => el("li", {}, el("code", {}, q.name), " — ", q.reason))),
    el("h3", {}, `Recent errors (${status.errors.length})`),
    el("ul", { id: "errors" }, status.errors.map((e) => el("li", {}, el("code", {}, e)))));
  view.replaceChildren(
    el("section", { class: "stats" },
      stat("stat-total", "traces", t.total ?? 0), stat("stat-accepted", "accepted", t.accepted ?? 0, "good"),
      stat("stat-rejected", "rejected", t.rejected ?? 0), stat("stat-human", "by hand", t.human_verdicts ?? 0),
      stat("stat-pending", "spool pending", s.pending_events), stat("stat-quarantined", "quarantined", s.quarantined, s.quarantined ? "warn" : ""),
      stat("stat-target", "toward target", `${t.accepted ?? 0}/${t.target_accepted}`)),
    el("div", { class: "columns" },
      el("section", { class: "feed" }, el("h2", {}, "Traces as they commit"),
        el("ul", { id: "live-feed" }, state.feed.map(feedItem))),
      problems));
}

// --- Browse and curate ----------------------------------------------------------------------

const FILTERS = [
  ["verdict", "select", ["", "accepted", "rejected", "human", "rules", "unscored"]],
  ["pattern", "select", ["", "linear", "parallel", "exploratory", "iterative"]],
  ["tool", "text"], ["project", "text"], ["session", "text"], ["since", "date"], ["until", "date"], ["q", "search"],
];

function filterForm(onChange) {
  const inputs = FILTERS.map(([name, kind, options]) => {
    const input = kind === "select"
      ? el("select", { id: "f-" + name, name }, options.map((o) => el("option", { value: o }, o || `any ${name}`)))
      : el("input", { id: "f-" + name, name, type: kind, placeholder: name === "q" ? "search prompts" : name });
    input.value = state.filter[name] || "";
    input.addEventListener("change", () => { state.filter[name] = input.value; onChange(); });
    return el("label", {}, input);
  });
  return el("form", { class: "filters", id: "filters", onsubmit: (e) => { e.preventDefault(); onChange(); } }, inputs);
}

const query = () => new URLSearchParams(Object.entries(state.filter).filter(([, v]) => v)).toString();

async function curate(action, body) {
  if (action === "forget" && !confirm("Forget for good?")) return;
  const result = await post("/api/curate", { action, ...body });
  flash(`${action}: ${result.changed} trace(s)`);
  route();
}

function flash(text) {
  const note = el("div", { class: "flash", id: "flash" }, text);
  document.getElementById("flash")?.remove();
  document.body.append(note);
  setTimeout(() => note.remove(), 4000);
}

function actions(ids) {
  return el("span", { class: "actions" },
    ["accept", "reject", "clear", "forget"].map((a) =>
      el("button", { type: "button", class: "act-" + a, title: a === "clear" ? "let the rules decide again" : a,
        onclick: () => curate(a, { ids }) }, { accept: "✓", reject: "✗", clear: "↺", forget: "forget" }[a])));
}

async function renderBrowse() {
  const data = await getJSON("/api/traces?" + query());
  const rows = data.traces.map((t) => el("tr", { data: { traceId: t.trace_id } },
    el("td", {}, el("a", { href: traceLink(t.trace_id) }, t.trace_id.slice(0, 12))),
    el("td", {}, when(t.started_at)), el("td", {}, verdictBadge(t)), el("td", {}, t.score ?? ""),
    el("td", {}, t.pattern || ""), el("td", { class: "prompt" }, t.prompt), el("td", { class: "muted" }, t.workflow),
    el("td", { class: "muted" }, t.project || ""), el("td", {}, actions([t.trace_id]))));
  view.replaceChildren(filterForm(route),
    el("p", { id: "match-count" }, `${data.total} matching traces` + (data.shown < data.total ? ` (newest ${data.shown} shown)` : "")),
    el("table", { id: "traces" }, el("thead", {}, el("tr", {}, ["id", "started", "verdict", "score", "pattern", "prompt", "workflow", "project", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)));
}

function bars(title, counts, id) {
  const max = Math.max(1, ...Object.values(counts));
  return el("div", { class: "bars", id }, el("h3", {}, title),
    Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([k, v]) =>
      el("div", { class: "bar" }, el("span", { class: "k" }, k), el("span", { class: "fill", style: null, data: { n: v } },
        el("span", { class: "inner", title: String(v) })), el("span", { class: "v" }, String(v)))));
}

function sizeBars(root) {
  // Widths set through the CSSOM (the CSP forbids inline style attributes).
  for (const box of root.querySelectorAll(".bars")) {
    const values = [...box.querySelectorAll(".fill")].map((f) => Number(f.dataset.n));
    const max = Math.max(1, ...values);
    box.querySelectorAll(".fill .inner").forEach((inner, i) => { inner.style.width = (100 * values[i] / max) + "%"; });
  }
}

async function renderCurate() {
  const [ready, data] = await Promise.all([getJSON("/api/readiness"), getJSON("/api/traces?" + query())]);
  const progress = el("progress", { id: "ready-progress", max: ready.target, value: ready.accepted });
  const filter = Object.fromEntries(Object.entries(state.filter).filter(([, v]) => v));
  view.replaceChildren(
    el("section", { class: "readiness" }, el("h2", {}, "Dataset readiness"),
      el("p", {}, el("strong", { id: "ready-accepted" }, String(ready.accepted)), ` of ${ready.target} accepted traces `, progress,
        ` · ${ready.duplicates} duplicates · ${ready.human_verdicts} decided by hand`),
      el("p", { id: "ready-advice", class: "advice" }, ready.advice),
      el("div", { class: "columns3" }, bars("By pattern", ready.by_pattern, "by-pattern"), bars("By kind", ready.by_source, "by-source"),
        bars("By project", ready.by_project, "by-project"))),
    el("section", {}, el("h2", {}, "Bulk actions on a filter"), filterForm(route),
      el("p", { id: "bulk-count" }, `${data.total} traces match`),
      ["accept", "reject", "clear", "forget"].map((a) => el("button", { type: "button", id: "bulk-" + a,
        onclick: () => curate(a, { filter }) }, `${a} all ${data.total}`))));
  sizeBars(view);
}

// --- One trace: the workflow drawn -----------------------------------------------------------

function callCard(call, index, recovered) {
  const failed = !call.success || call.is_interrupt;
  const input = JSON.stringify(call.input, null, 1);
  return el("div", { class: "call" + (failed ? " failed" : "") + (recovered ? " recovery" : ""), data: { index } },
    el("div", { class: "call-head" }, el("strong", {}, call.name), ` #${index + 1}`,
      call.duration_ms != null ? el("span", { class: "muted" }, ` ${call.duration_ms} ms`) : null,
      failed ? el("span", { class: "badge rejected" }, call.is_interrupt ? "interrupted" : "failed") : null,
      recovered ? el("span", { class: "badge accepted" }, "recovery") : null),
    el("pre", { class: "input" }, input.length > 600 ? input.slice(0, 600) + " …" : input),
    el("details", {}, el("summary", {}, failed ? "error" : "output"),
      el("pre", { class: "output" }, ((failed ? call.error || call.output : call.output) || "").slice(0, 4000))));
}

function workflow(trace) {
  const calls = trace.tool_calls, parts = [];
  // A message the user sent mid-turn goes first at its place: the model read it before the rest.
  const texts = [...(trace.mid_turn_messages || []).map((s) => ({ ...s, kind: "user" })),
    ...trace.assistant_text.map((s) => ({ ...s, kind: "narration" })), ...trace.thinking.map((s) => ({ ...s, kind: "thinking" }))]
    .sort((a, b) => a.position - b.position);
  const textAt = (pos) => texts.filter((s) => s.position === pos).map((s) =>
    el("div", { class: "text " + s.kind + (s.agent_id ? " sub" : "") }, el("span", { class: "label" }, s.kind), el("p", {}, s.text)));
  const failedBefore = new Map();
  let i = 0;
  while (i < calls.length) {
    parts.push(textAt(i));
    const key = (c) => (c.agent_id || "") + "|" + c.parallel_group;
    const group = [];
    let j = i;
    while (j < calls.length && key(calls[j]) === key(calls[i])) group.push([j, calls[j++]]);
    const cards = group.map(([k, c]) => {
      const agent = c.agent_id || "main";
      const recovered = c.success && failedBefore.get(agent);
      if (!c.success || c.is_interrupt) failedBefore.set(agent, true); else failedBefore.set(agent, false);
      return callCard(c, k, recovered);
    });
    const sub = calls[i].agent_id;
    parts.push(el("div", { class: "group" + (sub ? " lane" : "") + (group.length > 1 ? " parallel" : "") },
      sub ? el("div", { class: "lane-label" }, `subagent ${calls[i].agent_type || ""} ${sub.slice(0, 8)}`) : null,
      group.length > 1 ? el("div", { class: "lane-label" }, `${group.length} calls in parallel`) : null,
      el("div", { class: "cards" }, cards)));
    i = j;
  }
  parts.push(textAt(calls.length));
  for (const s of texts) if (s.position > calls.length) parts.push(textAt(s.position));
  return el("div", { id: "workflow" }, parts);
}

async function renderTrace(id) {
  const { trace, human } = await getJSON("/api/traces/" + encodeURIComponent(id));
  const q = trace.quality, s = trace.reasoning_signals;
  view.replaceChildren(
    el("section", { class: "trace-head" },
      el("h2", {}, "Prompt"), el("pre", { id: "trace-prompt", class: "prompt-text" }, trace.prompt),
      el("p", { class: "muted" }, `${trace.trace_id} · session ${trace.session_id} · ${trace.cwd || ""} · ${when(trace.started_at)} · ${trace.source}`),
      el("p", {}, verdictBadge({ accepted: q ? q.accepted : null, human }), " ", actions([trace.trace_id]))),
    el("section", {}, el("h2", {}, "Workflow"), workflow(trace)),
    el("section", {}, el("h2", {}, "Answer"), el("pre", { id: "trace-answer", class: "answer" }, trace.final_response || "(none)")),
    el("div", { class: "columns" },
      el("section", {}, el("h2", {}, "Signals"), el("dl", { id: "signals" },
        [["pattern", s.pattern], ["workflow", s.workflow], ["exploration", s.exploration_depth], ["reasoning steps", s.reasoning_steps],
          ["error recovery", s.error_recovery], ["files read", s.files_read.join(", ")], ["files changed", s.files_changed.join(", ")],
          ["plan", s.explicit_plan]].map(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "" : String(v))]))),
      el("section", {}, el("h2", {}, "Quality" + (q ? ` ${q.score.toFixed(2)}` : "")),
        el("ul", { id: "reasons" }, (q ? q.reasons : []).map((r) => el("li", { class: r.startsWith("+") ? "plus" : "minus" }, r))))));
}

// --- Training -------------------------------------------------------------------------------

async function renderTraining() {
  const data = await getJSON("/api/runs");
  view.replaceChildren(el("h2", {}, "Runs under ", el("code", {}, data.runs_dir)),
    data.runs.length ? null : el("p", {}, "No runs yet: `trainer run --demo` makes one (or pass --runs to `capture-daemon ui`)."),
    el("ul", { id: "runs" }, data.runs.map((r) => el("li", {}, el("a", { href: "#/run/" + encodeURIComponent(r.name) }, r.name), " ",
      r.stages.map((st) => el("span", { class: "badge " + (st.status === "done" ? "accepted" : "unscored") }, `${st.stage}: ${st.status}`))))));
}

function sequence(seq, divergence) {
  return el("ol", { class: "seq" }, seq.map((name, i) => el("li", { class: i === divergence ? "diverge" : "" }, name)));
}

async function renderRun(name) {
  const run = await getJSON("/api/runs/" + encodeURIComponent(name));
  const summary = run.eval ? run.eval.summary : {};
  const systems = Object.keys(summary), metrics = [...new Set(systems.flatMap((s) => Object.keys(summary[s])))];
  const fmt = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : typeof v === "string" ? v : v === undefined ? "" : JSON.stringify(v));
  view.replaceChildren(el("h2", {}, "Run ", name),
    el("table", { id: "stages" }, el("tr", {}, el("th", {}, "stage"), el("th", {}, "status"), el("th", {}, "finished")),
      run.stages.map((s) => el("tr", {}, el("td", {}, s.stage), el("td", {}, s.status), el("td", {}, s.at || "")))),
    el("section", { class: "curves" }, run.images.map((p) => el("figure", {}, el("img", { src: `/runs/${encodeURIComponent(name)}/${p}`, alt: p }), el("figcaption", {}, p)))),
    run.eval ? el("section", {}, el("h2", {}, `Evaluation (${run.eval.n_examples} ${run.eval.split} examples)`),
      el("table", { id: "eval" }, el("tr", {}, el("th", {}, "metric"), systems.map((s) => el("th", {}, s))),
        metrics.map((m) => el("tr", {}, el("td", {}, m), systems.map((s) => el("td", {}, fmt(summary[s][m]))))))) : null,
    run.examples.length ? el("section", {}, el("h2", {}, "Per example: teacher vs each system (first divergence marked)"),
      run.examples.map((ex) => el("div", { class: "example" }, el("p", { class: "prompt" }, ex.prompt),
        el("div", { class: "cards" }, el("div", { class: "call" }, el("strong", {}, "teacher"), sequence(ex.teacher, null)),
          Object.entries(ex.systems).map(([k, v]) => el("div", { class: "call" }, el("strong", {}, k),
            v.first_divergence === null ? el("span", { class: "badge accepted" }, "same") : el("span", { class: "badge rejected" }, `diverges at step ${v.first_divergence + 1}`),
            sequence(v.sequence, v.first_divergence), el("pre", { class: "output" }, v.answer))))))) : null,
    run.mined.length ? el("section", {}, el("h2", {}, "Mining: where the student is easiest to tell apart (top 20)"),
      el("table", { id: "mined" }, el("tr", {}, Object.keys(run.mined[0]).map((k) => el("th", {}, k))),
        run.mined.map((row) => el("tr", {}, Object.keys(run.mined[0]).map((k) => el("td", {}, fmt(row[k]))))))) : null,
    run.ab_report ? el("section", {}, el("h2", {}, "A/B report"), el("pre", { id: "ab-report" }, JSON.stringify(run.ab_report, null, 1)),
      el("p", {}, "Judge blind with `trainer ab-test --serve`.")) : null);
}

// --- Routing and live updates ----------------------------------------------------------------

async function route() {
  const [, page, arg] = (location.hash || "#/live").split("/");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("here", a.id === "nav-" + page));
  document.body.dataset.state = "loading";
  try {
    if (page === "browse") await renderBrowse();
    else if (page === "curate") await renderCurate();
    else if (page === "trace") await renderTrace(decodeURIComponent(arg));
    else if (page === "training") await renderTraining();
    else if (page === "run") await renderRun(decodeURIComponent(arg));
    else await renderLive();
    document.body.dataset.page = page || "live";
    document.body.dataset.state = "ready";
  } catch (err) {
    view.replaceChildren(el("p", { class: "bad", id: "error" }, String(err.message || err)));
    document.body.dataset.state = "error";
  }
}

function listen() {
  const source = new EventSource("/api/events");
  const conn = document.getElementById("conn");
  source.onopen = () => { conn.textContent = "live"; conn.className = "ok"; };
  source.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "warn"; };
  source.addEventListener("trace", (event) => {
    const t = JSON.parse(event.data);
    state.feed = [t, ...state.feed.filter((x) => x.trace_id !== t.trace_id)].slice(0, 50);
    const feed = document.getElementById("live-feed");
    if (feed) {
      feed.querySelector(`li[data-trace-id="${CSS.escape(t.trace_id)}"]`)?.remove();
      const item = feedItem(t);
      item.classList.add("new");
      feed.prepend(item);
      refreshCounts();
    }
  });
}

async function refreshCounts() {
  const status = await getJSON("/api/status");
  const set = (id, v) => { const n = document.getElementById(id); if (n) n.textContent = String(v); };
  set("stat-total", status.traces.total ?? 0); set("stat-accepted", status.traces.accepted ?? 0);
  set("stat-rejected", status.traces.rejected ?? 0); set("stat-human", status.traces.human_verdicts ?? 0);
  set("stat-pending", status.spool.pending_events); set("stat-quarantined", status.spool.quarantined);
  set("stat-target", `${status.traces.accepted ?? 0}/${status.traces.target_accepted}`);
}

window.addEventListener("hashchange", route);
route();
listen();
setInterval(() => { if (document.body.dataset.page === "live") refreshCounts().catch(() => {}); }, 5000);

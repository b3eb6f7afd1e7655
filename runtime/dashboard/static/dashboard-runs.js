// The runs view: the overview counts, throughput per minute, the "run a task" form, dead letters, and the
// runs list (filters, search by run id or argument text, paging beyond the latest 100, bulk actions).
import {
  $, api, AuthNeeded, badge, byTestId, describeError, fmtClock, fmtDuration, h, hooks, notify, PAGE_SIZE, parseTime,
  runLink, shortId, state, STATUSES, svg, timeCell, truncate, writeHash,
} from "./dashboard-core.js";

// /api/stats `queue`: the tasks in the queues now, summed over the queues (as GET /api/queues counts them)
const QUEUE = [["waiting", "waiting"], ["running", "running"], ["scheduled", "scheduled"], ["retrying", "retrying"], ["dead", "dead"]];

export function runsQuery() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.fn) params.set("function", state.fn);
  if (state.status) params.set("status", state.status);
  if (state.queue) params.set("queue", state.queue);
  if (state.search) params.set("search", state.search);
  if (state.offset) params.set("offset", String(state.offset));
  return `/api/runs?${params}`;
}

export function syncFilters() {
  for (const [id, value] of [["#function-filter", state.fn], ["#queue-filter", state.queue]]) {
    const select = $(id);
    if (value && ![...select.options].some((o) => o.value === value)) select.append(h("option", { value }, value));
    select.value = value;
  }
  $("#status-filter").value = state.status;
  if (document.activeElement !== $("#runs-search")) $("#runs-search").value = state.search;
}

export function renderStats(stats) {
  const perFunction = stats.runs || {};
  const totals = stats.statuses || {};  // every status, counted by the API
  byTestId("status-counts").replaceChildren(...STATUSES.map((s) =>
    h("div", { class: `card ${s}`, testid: `stat-${s}` }, h("div", { class: "n" }, totals[s] || 0), h("div", { class: "label" }, s))));
  const queue = stats.queue || {};
  const busy = stats.workers_running || [];
  byTestId("queue-depths").replaceChildren(h("div", { class: "caption" }, "in the", h("br"), "queues"),
    ...QUEUE.map(([key, label]) => h("div", { class: `card ${key}`, testid: `queue-${key}`, title: `${label}: in the queues now` },
      h("div", { class: "n" }, queue[key] ?? 0), h("div", { class: "label" }, label))),
    h("div", { class: "card", testid: "workers-running", title: busy.map((w) => `${w.name}: ${w.running} running`).join("\n") || "no worker runs anything" },
      h("div", { class: "n" }, busy.filter((w) => w.running > 0).length), h("div", { class: "label" }, "busy workers")));
  const names = Object.keys(perFunction).sort();
  if (!names.length) {
    byTestId("function-counts").replaceChildren(h("div", { class: "empty" }, "no runs yet"));
    return;
  }
  byTestId("function-counts").replaceChildren(h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "function"), STATUSES.map((s) => h("th", { class: "num" }, s)))),
    h("tbody", {}, names.map((name) => h("tr", { testid: "function-count-row", "data-function": name, class: "clickable",
        onclick: () => { state.fn = name; state.status = ""; state.offset = 0; syncFilters(); writeHash(); hooks.refresh(); } },
      h("td", {}, name),
      STATUSES.map((s) => h("td", { class: "num", "data-status": s }, perFunction[name][s] || 0)))))));
}

// an inline SVG: one stacked bar per minute (succeeded below, failed on top), the last 60 minutes
export function renderThroughput(minutes) {
  const width = 600, height = 100, top = 4, bottom = 1, left = 0;
  const max = Math.max(1, ...minutes.map((m) => m.succeeded + m.failed));
  const step = (width - left) / Math.max(1, minutes.length);
  const scale = (n) => (n / max) * (height - top - bottom);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
    role: "img", "aria-label": "runs finished per minute, last hour", "data-testid": "throughput-chart" });
  chart.append(svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }));
  minutes.forEach((m, i) => {
    const x = left + i * step + 1, w = Math.max(1, step - 2);
    const ok = scale(m.succeeded), bad = scale(m.failed);
    const at = parseTime(m.minute);
    const label = `${at ? fmtClock(at, false) : m.minute}: ${m.succeeded} succeeded, ${m.failed} failed`;
    const g = svg("g", { "data-testid": "throughput-minute", "data-succeeded": m.succeeded, "data-failed": m.failed }, svg("title", {}, label));
    if (ok) g.append(svg("rect", { class: "ok", x, y: height - bottom - ok, width: w, height: ok }));
    if (bad) g.append(svg("rect", { class: "bad", x, y: height - bottom - ok - bad, width: w, height: bad }));
    chart.append(g);
  });
  const first = parseTime(minutes[0] && minutes[0].minute);
  const axis = h("div", { class: "chart-axis" }, h("span", {}, first ? fmtClock(first, false) : ""),
    h("span", {}, `peak ${max} per minute`), h("span", {}, "now"));
  const total = minutes.reduce((a, m) => [a[0] + m.succeeded, a[1] + m.failed], [0, 0]);
  byTestId("throughput").replaceChildren(chart, axis,
    h("div", { class: "muted", testid: "throughput-total" }, `${total[0]} succeeded, ${total[1]} failed in the last hour`));
}

export function renderFunctionChoices(functions) {
  const tasks = functions.filter((f) => f.kind === "task");
  $("#function-filter").replaceChildren(h("option", { value: "" }, "all"), ...tasks.map((f) => h("option", { value: f.name }, f.name)));
  const queues = [...new Set(tasks.map((f) => f.queue || "default"))].sort();
  $("#queue-filter").replaceChildren(h("option", { value: "" }, "all"), ...queues.map((q) => h("option", { value: q }, q)));
  syncFilters();
  const taskSelect = $("#enqueue-function");
  const chosen = taskSelect.value;
  taskSelect.replaceChildren(...tasks.map((f) => h("option", { value: f.name }, f.name)));
  if (chosen && [...taskSelect.options].some((o) => o.value === chosen)) taskSelect.value = chosen;
  showArguments();
}

// ---- "Run a task": the arguments start as a template of the task's parameters --------------------------
const drafts = new Map(); // task name -> the arguments typed for it (kept while switching tasks)

// a value of the schema's type: its default when it has one, else an empty one ("" 0 false [] {} null)
function example(schema, defs, depth = 0) {
  if (!schema || depth > 5) return null;
  if ("default" in schema) return schema.default;
  if (schema.$ref) return example(defs[schema.$ref.split("/").pop()], defs, depth + 1);
  const options = schema.anyOf || schema.oneOf;
  if (options) return example(options.find((o) => o.type !== "null") || options[0], defs, depth + 1);
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  if (type === "object" && schema.properties) {
    return Object.fromEntries(Object.entries(schema.properties).map(([k, v]) => [k, example(v, defs, depth + 1)]));
  }
  return { string: "", integer: 0, number: 0, boolean: false, array: [], object: {} }[type] ?? null;
}
export function argumentsTemplate(schema) {
  if (!schema || !schema.properties || !Object.keys(schema.properties).length) return "{}";
  return JSON.stringify(example(schema, schema.$defs || {}), null, 2);
}
function showArguments() {
  const name = $("#enqueue-function").value;
  const task = state.functions.find((f) => f.name === name);
  const text = drafts.has(name) ? drafts.get(name) : argumentsTemplate(task && task.arguments);
  const area = $("#enqueue-arguments");
  if (area.dataset.task !== name || !drafts.has(name)) area.value = text;
  area.dataset.task = name;
}

function updateBulkButtons() {
  const n = state.selected.size;
  byTestId("bulk-replay-selected").disabled = n === 0;
  byTestId("bulk-delete-selected").disabled = n === 0;
  byTestId("bulk-replay-selected").textContent = n ? `Replay ${n} selected` : "Replay selected";
  byTestId("bulk-delete-selected").textContent = n ? `Delete ${n} selected` : "Delete selected";
}

export function renderRuns(runs) {
  const from = state.offset + 1, to = state.offset + runs.length;
  byTestId("runs-count").textContent = runs.length >= PAGE_SIZE || state.offset ? `${from}–${to}` : `${runs.length}`;
  byTestId("runs-page").textContent = runs.length ? `runs ${from}–${to}, newest first` : (state.offset ? "no older runs" : "");
  byTestId("runs-newer").disabled = state.offset === 0;
  byTestId("runs-older").disabled = runs.length < PAGE_SIZE;
  const body = byTestId("runs-table").querySelector("tbody");
  const filtered = state.fn || state.status || state.queue || state.search;
  if (!runs.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 9, class: "empty" }, filtered ? "no runs match these filters" : "no runs yet")));
    return;
  }
  const shown = new Set(runs.map((r) => r.id));
  for (const id of [...state.selected]) if (!shown.has(id)) state.selected.delete(id);
  body.replaceChildren(...runs.map((run) => h("tr", {
      testid: "run-row", "data-run-id": run.id, "data-status": run.status, "data-function": run.function,
      class: `clickable${run.id === state.run ? " selected" : ""}`, onclick: () => hooks.openRun(run.id) },
    h("td", { onclick: (e) => e.stopPropagation() }, h("input", { type: "checkbox", testid: "run-select", checked: state.selected.has(run.id),
      onchange: (e) => { if (e.target.checked) state.selected.add(run.id); else state.selected.delete(run.id); updateBulkButtons(); } })),
    h("td", {}, runLink(run.id)), h("td", { class: "mono" }, run.function), h("td", { class: "mono muted" }, run.queue || ""),
    h("td", {}, badge(run.status)),
    h("td", { class: "num" }, `${run.attempts}/${run.max_attempts}`), timeCell(run.enqueued_at),
    h("td", { class: "num", testid: "run-duration" }, fmtDuration(run.duration_ms)),
    h("td", { class: "error-text", title: run.last_error || null, testid: "run-error" }, truncate(run.last_error || "", 300)))));
  updateBulkButtons();
}

export function renderDeadLetters(runs) {
  byTestId("dead-letters-count").textContent = `${runs.length}`;
  const body = byTestId("dead-letters").querySelector("tbody");
  if (!runs.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "no dead letters")));
    return;
  }
  body.replaceChildren(...runs.map((run) => h("tr", { testid: "dead-letter-row", "data-run-id": run.id, "data-function": run.function },
    h("td", {}, runLink(run.id)), h("td", { class: "mono" }, run.function),
    h("td", { class: "num" }, `${run.attempts}/${run.max_attempts}`), timeCell(run.finished_at),
    h("td", { class: "error-text", title: run.last_error || null, testid: "dead-letter-error" }, truncate(run.last_error || "", 300)),
    h("td", { style: "white-space:nowrap;text-align:right" },
      h("button", { type: "button", testid: "replay-button", onclick: (e) => replay(run.id, e.currentTarget) }, "Replay"), " ",
      h("button", { type: "button", class: "danger", testid: "delete-button", onclick: (e) => removeRun(run.id, e.currentTarget) }, "Delete")))));
}

// ---- actions -------------------------------------------------------------------------------------
export async function replay(id, button, notice = "dead-letter-notice") {
  if (button) button.disabled = true;
  try {
    const run = await api(`/api/runs/${encodeURIComponent(id)}/replay`, { method: "POST" });
    notify(notice, "ok", `Run ${shortId(id)} replayed as `, runLink(run.id, "replayed-run-link"), ` (${run.status}).`);
    hooks.openRun(run.id);
    await hooks.refresh();
  } catch (err) {
    if (!(err instanceof AuthNeeded)) notify(notice, "err", `Replay of ${shortId(id)} failed: ${describeError(err)}`);
    if (button) button.disabled = false;
  }
}
export async function removeRun(id, button) {
  if (!window.confirm(`Delete run ${id}? Its record and dead letter are removed for good.`)) return;
  if (button) button.disabled = true;
  try {
    await api(`/api/runs/${encodeURIComponent(id)}`, { method: "DELETE" });
    notify("dead-letter-notice", "ok", `Run ${shortId(id)} deleted.`);
    if (state.run === id) hooks.closeRun();
    await hooks.refresh();
  } catch (err) {
    if (!(err instanceof AuthNeeded)) notify("dead-letter-notice", "err", `Delete of ${shortId(id)} failed: ${describeError(err)}`);
    if (button) button.disabled = false;
  }
}
async function bulk(action, filter, what) {
  if (!window.confirm(`${action === "replay" ? "Replay" : "Delete"} ${what}?`)) return;
  try {
    const answer = await api(`/api/runs/${action}`, { method: "POST", json: filter });
    const count = answer && answer.count !== undefined ? answer.count : 0;
    notify("bulk-notice", "ok", `${action === "replay" ? "Replayed" : "Deleted"} ${count} run${count === 1 ? "" : "s"}.`);
    state.selected.clear();
    if (action === "delete" && filter.ids && filter.ids.includes(state.run)) hooks.closeRun();
    await hooks.refresh();
  } catch (err) {
    if (!(err instanceof AuthNeeded)) notify("bulk-notice", "err", `Bulk ${action} failed: ${describeError(err)}`);
  }
}
function failedFilter() {
  const filter = { status: "failed" };
  if (state.fn) filter.function = state.fn;
  const since = byTestId("bulk-since").value;
  if (since) filter.since = since;
  return filter;
}
function failedWhat() {
  const since = byTestId("bulk-since").value;
  return `every failed run${state.fn ? ` of ${state.fn}` : ""}${since ? ` since ${since} ago` : ""}`;
}

export function wireRuns() {
  for (const status of STATUSES) $("#status-filter").append(h("option", { value: status }, status));
  const changed = () => { state.offset = 0; state.selected.clear(); writeHash(); hooks.refresh(); };
  $("#function-filter").addEventListener("change", (e) => { state.fn = e.target.value; changed(); });
  $("#status-filter").addEventListener("change", (e) => { state.status = e.target.value; changed(); });
  $("#queue-filter").addEventListener("change", (e) => { state.queue = e.target.value; changed(); });
  let typing = null;
  $("#runs-search").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.search = e.target.value.trim(); changed(); }, 250);
  });
  byTestId("runs-older").addEventListener("click", () => { state.offset += PAGE_SIZE; writeHash(); hooks.refresh(); });
  byTestId("runs-newer").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); writeHash(); hooks.refresh(); });
  byTestId("select-all").addEventListener("change", (e) => {
    for (const box of document.querySelectorAll('[data-testid="run-row"] [data-testid="run-select"]')) {
      box.checked = e.target.checked;
      const id = box.closest("tr").dataset.runId;
      if (e.target.checked) state.selected.add(id); else state.selected.delete(id);
    }
    updateBulkButtons();
  });
  byTestId("bulk-replay-selected").addEventListener("click", () => bulk("replay", { ids: [...state.selected] }, `${state.selected.size} selected run(s)`));
  byTestId("bulk-delete-selected").addEventListener("click", () => bulk("delete", { ids: [...state.selected] }, `${state.selected.size} selected run(s) for good`));
  byTestId("bulk-replay-failed").addEventListener("click", () => bulk("replay", failedFilter(), failedWhat()));
  byTestId("bulk-delete-failed").addEventListener("click", () => bulk("delete", failedFilter(), `${failedWhat()} for good`));
  $("#enqueue-function").addEventListener("change", showArguments);
  $("#enqueue-arguments").addEventListener("input", (e) => drafts.set(e.target.dataset.task || "", e.target.value));
  $("#enqueue-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("#enqueue-function").value;
    if (!name) { notify("enqueue-result", "err", "This app has no tasks."); return; }
    const button = byTestId("enqueue-submit");
    button.disabled = true;
    try {
      const run = await api(`/api/functions/${encodeURIComponent(name)}/runs`, {
        method: "POST", body: $("#enqueue-arguments").value, headers: { "Content-Type": "application/json" } });
      notify("enqueue-result", "ok", "Queued run ", runLink(run.id, "enqueued-run-link"), ` (${run.status}).`);
      hooks.openRun(run.id);
      await hooks.refresh();
    } catch (err) {
      if (!(err instanceof AuthNeeded)) notify("enqueue-result", "err", describeError(err));
    } finally {
      button.disabled = false;
    }
  });
}

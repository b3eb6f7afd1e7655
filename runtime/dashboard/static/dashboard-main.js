// The page: switches views (kept in the URL hash), refreshes the active view every 2 s, and stays usable
// while the app's code is broken (the emulator then answers 503 with the error: it shows on top, and
// the runs still come from the run store).
import {
  $, api, ApiError, AuthNeeded, byTestId, describeError, fmtClock, h, hooks, readHash, saveToken, state,
  tzText, VIEWS, writeHash,
} from "./dashboard-core.js";
import { renderDetail, renderDetailError } from "./dashboard-run.js";
import {
  renderDeadLetters, renderFunctionChoices, renderRuns, renderStats, renderThroughput, runsQuery, syncFilters, wireRuns,
} from "./dashboard-runs.js";
import { renderQueues } from "./dashboard-queues.js";
import { renderWorkers } from "./dashboard-workers.js";
import { renderFunctions, renderSchedules, wireFunctions } from "./dashboard-functions.js";
import { renderFlowNow } from "./dashboard-flow.js";
import { renderEvents, wireEvents } from "./dashboard-events.js";

const REFRESH_MS = 2000;

function showView() {
  for (const el of document.querySelectorAll(".view")) el.hidden = el.dataset.view !== state.view;
  for (const a of document.querySelectorAll("nav.tabs a")) a.classList.toggle("active", a.dataset.view === state.view);
}

function openRun(id) {
  state.run = id;
  if (state.view !== "runs") { state.view = "runs"; showView(); }
  writeHash();
  for (const row of document.querySelectorAll('[data-testid="run-row"]')) row.classList.toggle("selected", row.dataset.runId === id);
  loadDetail();
}
function closeRun() {
  state.run = ""; writeHash();
  byTestId("run-detail").hidden = true;
  byTestId("run-detail").dataset.runId = "";
  $("#runs-layout").classList.remove("with-detail");
  for (const row of document.querySelectorAll('[data-testid="run-row"].selected')) row.classList.remove("selected");
}
async function loadDetail() {
  if (!state.run) { closeRun(); return; }
  const id = state.run;
  try {
    const run = await api(`/api/runs/${encodeURIComponent(id)}`);
    if (state.run === id) renderDetail(run);
  } catch (err) {
    if (!(err instanceof AuthNeeded) && state.run === id) renderDetailError(id, err);
  }
}

// the app's load error, when the emulator serves a broken generation: 503 with {"error", "detail"}
function brokenApp(results) {
  for (const r of results) {
    const err = r.status === "rejected" ? r.reason : null;
    if (err instanceof ApiError && err.status === 503 && err.body && err.body.detail) return err.body;
  }
  return null;
}

async function refresh() {
  if (state.needAuth || state.busy) return;
  state.busy = true;
  try {
    const calls = { app: api("/api/app"), functions: api("/api/functions") };  // every view names the app
    if (state.view === "runs") {
      Object.assign(calls, { stats: api("/api/stats"), runs: api(runsQuery()), dead: api("/api/dead-letters"), throughput: api("/api/throughput") });
    } else if (state.view === "queues") {
      calls.queues = api("/api/queues");
    } else if (state.view === "workers") {
      calls.workers = api("/api/workers");
    } else if (state.view === "functions") {
      Object.assign(calls, { schedules: api("/api/schedules"), limits: api("/api/limits") });
    } else if (state.view === "events") {
      calls.events = api("/api/events");
    }
    const names = Object.keys(calls);
    const results = await Promise.allSettled(Object.values(calls));
    if (results.some((r) => r.status === "rejected" && r.reason instanceof AuthNeeded)) return;
    const got = Object.fromEntries(names.map((n, i) => [n, results[i]]));
    const ok = (name) => got[name] && got[name].status === "fulfilled";
    const broken = brokenApp(results);
    const banner = byTestId("app-error");
    if (broken) {
      banner.replaceChildren(h("strong", {}, "The app failed to load: fix it and save. "),
        "The dashboard is read-only until then; the runs below come from the run store.",
        h("pre", { testid: "app-error-detail" }, broken.detail));
      byTestId("app-name").textContent = broken.app || "app not loaded";
    }
    banner.hidden = !broken;
    for (const id of ["enqueue-section", "dead-letters-section", "stats"]) byTestId(id).hidden = Boolean(broken);
    if (ok("app")) {
      byTestId("app-name").textContent = got.app.value.app;
      document.title = `${got.app.value.app} · dashboard`;
    }
    if (ok("functions")) {
      state.functions = got.functions.value;
      if (renderFunctions(state.functions)) renderFunctionChoices(state.functions);
    }
    if (ok("stats")) {
      renderStats(got.stats.value);
    }
    if (ok("runs")) renderRuns(got.runs.value);
    if (ok("dead")) renderDeadLetters(got.dead.value);
    if (ok("throughput")) renderThroughput(got.throughput.value);
    if (ok("queues")) renderQueues(got.queues.value);
    if (ok("workers")) renderWorkers(got.workers.value);
    if (ok("schedules")) renderSchedules(got.schedules.value);
    if (ok("limits")) renderFlowNow(got.limits.value);
    if (ok("events")) renderEvents(got.events.value);
    if (state.view === "runs" && state.run) await loadDetail();
    // a failure other than the app's own error (which has its banner) is a connection problem
    const failures = results.filter((r) => r.status === "rejected" && !(r.reason instanceof ApiError && r.reason.status === 503 && broken));
    const connection = byTestId("connection-error");
    if (failures.length) {
      const first = failures[0].reason;
      connection.textContent = first instanceof ApiError && first.status === 404 && state.view === "queues"
        ? `This view needs GET /api/queues: ${describeError(first)}`
        : `Cannot load the dashboard data: ${describeError(first)} — retrying`;
    }
    connection.hidden = !failures.length;
    byTestId("updated").textContent = `updated ${fmtClock(new Date())} · times in ${tzText()} · every ${REFRESH_MS / 1000} s`;
  } finally {
    state.busy = false;
  }
}

hooks.refresh = refresh;
hooks.openRun = openRun;
hooks.closeRun = closeRun;

$("#auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("#auth-token").value.trim();
  if (!token) return;
  saveToken(token);
  state.needAuth = false;
  $("#auth").hidden = true;
  refresh();
});
for (const a of document.querySelectorAll("nav.tabs a")) {
  a.addEventListener("click", (e) => {
    e.preventDefault();
    if (!VIEWS.includes(a.dataset.view)) return;
    state.view = a.dataset.view; writeHash(); showView(); refresh();
  });
}
window.addEventListener("hashchange", () => { readHash(); syncFilters(); showView(); refresh(); });
wireRuns();
wireFunctions(() => state.functions);
wireEvents();
readHash();
syncFilters();
showView();
refresh();
setInterval(refresh, REFRESH_MS);

// The run view (the detail panel beside the runs): what a waiting run waits for, its durable steps as a
// waterfall, a timeline of its attempts (start, duration, worker, error type, traceback), arguments and
// result, trace id, the replay chain, total duration, Cancel, Replay, and "run again" with edited arguments.
import {
  $, api, AuthNeeded, badge, byTestId, describeError, fmtClock, fmtDuration, fmtTime, h, hooks, notify, parseTime,
  pretty, runLink, shortId, state, UNFINISHED,
} from "./dashboard-core.js";
import { replay } from "./dashboard-runs.js";

const chains = new Map(); // run id -> the ids it replays, oldest last (loaded once per run)

function kv(label, value, testid) { return [h("dt", {}, label), h("dd", { testid }, value)]; }

// the attempts on one time axis from the first start (a waterfall, as Inngest draws a run's steps): per
// attempt a bar, and under it its start, duration, worker and outcome; the gaps are the retry delays
function timeline(run) {
  const history = run.history || [];
  const starts = history.map((a) => parseTime(a.started_at)).filter(Boolean);
  if (!starts.length) return null;
  const begin = Math.min(...starts.map(Number));
  const length = (a, i) => {
    if (a.duration_ms !== undefined && a.duration_ms !== null) return Number(a.duration_ms);
    const s = parseTime(a.started_at);  // still running: up to now
    return run.status === "running" && i === history.length - 1 && s ? Date.now() - Number(s) : 0;
  };
  const ends = history.map((a, i) => Number(parseTime(a.started_at) || begin) + length(a, i));
  const finish = parseTime(run.finished_at);
  const span = Math.max(1, ...ends.map((e) => e - begin), finish ? Number(finish) - begin : 0);
  const at = (ms) => `${Math.min(100, Math.max(0, (ms / span) * 100)).toFixed(2)}%`;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * span);
  const scale = h("div", { class: "scale", testid: "timeline-axis" },
    ticks.map((ms) => h("span", { class: "tick", testid: "timeline-tick", style: `left:${at(ms)}` }, ms === 0 ? "0 ms" : `+${fmtDuration(ms)}`)));
  const lanes = history.map((a, i) => {
    const label = a.attempt ?? i + 1;
    const s = parseTime(a.started_at);
    const offset = s ? Number(s) - begin : 0;
    const open = a.duration_ms === undefined || a.duration_ms === null;
    const kind = a.error || a.error_type ? "failed" : a.waited_for ? "suspended"
      : (open ? (run.status === "running" ? "running" : "cancelled") : "ok");
    const outcome = a.error_type || (a.waited_for ? `suspended: ${a.waited_for}` : null)
      || { failed: "failed", running: "running", cancelled: "unfinished", ok: "succeeded" }[kind];
    return h("div", { class: "lane", testid: "timeline-attempt", "data-attempt": label, "data-outcome": kind },
      h("span", { class: "n", title: `attempt ${label}` }, `#${label}`),
      h("div", { class: "track" }, ticks.slice(1, -1).map((ms) => h("span", { class: "grid", style: `left:${at(ms)}` })),
        h("div", { class: `bar ${kind}`, title: `attempt ${label}: ${fmtDuration(length(a, i))}`,
          style: `left:${at(offset)};width:${at(Math.min(span - offset, Math.max(length(a, i), span * 0.005)))}` })),
      h("div", { class: "info" },
        h("span", { class: "mono", testid: "timeline-start", title: fmtTime(a.started_at) }, fmtClock(a.started_at)), " · ",
        h("span", { testid: "timeline-duration" }, open && kind === "running" ? `${fmtDuration(length(a, i))} so far` : fmtDuration(a.duration_ms)), " · ",
        h("span", { class: "mono", testid: "timeline-worker" }, a.worker || "—"), " · ",
        h("span", { class: `outcome ${kind}`, testid: "timeline-outcome", title: outcome }, outcome)));
  });
  return h("div", { class: "timeline", testid: "attempt-timeline" }, h("div", { class: "lane" }, h("span"), scale), lanes);
}

// the durable steps on one time axis, as Inngest's dev server draws a run: a bar per step from its start
// to its end (a sleep's or a wait's end is when it wakes), and under it its name, status and duration
function waterfall(steps) {
  // a sleep or a wait not over yet ends (in the record) when it wakes at the latest: drawn up to now
  const now = Date.now();
  const spans = steps.map((st) => {
    const a = parseTime(st.started_at), b = parseTime(st.finished_at);
    return [a, b && Number(b) > now ? new Date(now) : b, Boolean(b && Number(b) > now)];
  });
  const starts = spans.map(([a]) => a).filter(Boolean).map(Number);
  if (!starts.length) return null;
  const begin = Math.min(...starts);
  const span = Math.max(1, ...spans.map(([a, b]) => Number(b || a || begin) - begin));
  const at = (ms) => `${Math.min(100, Math.max(0, (ms / span) * 100)).toFixed(2)}%`;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * span);
  const scale = h("div", { class: "scale", testid: "steps-axis" },
    ticks.map((ms) => h("span", { class: "tick", testid: "steps-tick", style: `left:${at(ms)}` }, ms === 0 ? "0 ms" : `+${fmtDuration(ms)}`)));
  const lanes = steps.map((st, i) => {
    const [start, end, pending] = spans[i];
    const offset = start ? Number(start) - begin : 0;
    const length = start && end ? Number(end) - Number(start) : Number(st.duration_ms) || 0;
    const kind = ["succeeded", "failed", "sleep", "wait"].includes(st.status) ? st.status : "other";
    const retries = st.attempts > 1 ? ` · ${st.attempts} attempts` : "";
    const took = pending ? `${fmtDuration(length)} so far, until ${fmtClock(st.finished_at)}` : fmtDuration(st.duration_ms);
    const what = `${st.name} · ${st.status} · ${took}${retries}`;
    return h("div", { class: "lane step", testid: "step", "data-step": st.name, "data-status": st.status, "data-pending": pending ? "true" : null },
      h("div", { class: "track" }, ticks.slice(1, -1).map((ms) => h("span", { class: "grid", style: `left:${at(ms)}` })),
        h("div", { class: `bar ${kind}${pending ? " pending" : ""}`, testid: "step-bar", title: `${what}\n${fmtTime(st.started_at)} → ${fmtTime(st.finished_at)}`,
          style: `left:${at(offset)};width:${at(Math.min(span - offset, Math.max(length, span * 0.005)))}` })),
      h("div", { class: "info", title: what },
        h("strong", { class: "mono", testid: "step-name" }, st.name), " · ",
        h("span", { class: `outcome ${kind}`, testid: "step-status" }, st.status), " · ",
        h("span", { testid: "step-duration" }, took), retries,
        st.error ? [" · ", h("span", { class: "outcome failed", testid: "step-error", title: st.error }, `${st.error_type || "error"}: ${st.error}`)] : null));
  });
  return h("div", { class: "timeline steps", testid: "steps-waterfall" }, h("div", { class: "lane step" }, scale), lanes);
}

function attempt(a, i) {
  const label = a.attempt ?? i + 1;
  return h("li", { testid: "attempt", "data-attempt": label },
    h("div", {}, h("strong", {}, `attempt ${label}`), " · started ", h("span", { class: "mono" }, fmtTime(a.started_at)),
      " · ", h("span", { testid: "attempt-duration" }, fmtDuration(a.duration_ms)),
      a.worker ? [" · ", h("span", { class: "mono meta", testid: "attempt-worker" }, a.worker)] : null),
    a.error_type ? h("div", { class: "meta" }, "error type ", h("span", { class: "mono", testid: "attempt-error-type" }, a.error_type)) : null,
    a.error ? h("div", { class: "err", testid: "attempt-error" }, a.error)
      : h("div", { class: "muted" }, a.waited_for ? `suspended: ${a.waited_for}` : a.duration_ms === undefined ? "running" : "no error"),
    a.traceback ? h("details", { testid: "attempt-traceback", "data-key": `traceback-${label}` }, h("summary", {}, "traceback"), h("pre", {}, a.traceback)) : null);
}

async function loadChain(run) {
  if (!run.replay_of || chains.has(run.id)) return;
  const ids = [];
  let next = run.replay_of;
  while (next && ids.length < 10 && !ids.includes(next)) {
    ids.push(next);
    try { next = (await api(`/api/runs/${encodeURIComponent(next)}`)).replay_of; } catch (e) { break; }
  }
  chains.set(run.id, ids);
  const holder = byTestId("replay-chain");
  if (holder && state.run === run.id) holder.replaceChildren(...chainLinks(ids));
}
function chainLinks(ids) {
  return ids.flatMap((id, i) => [i ? " ← " : "", runLink(id, i === 0 ? "replay-of-link" : "replay-chain-link")]);
}

export function renderDetail(run) {
  const panel = byTestId("run-detail");
  // the refresh every 2 s: an unchanged finished run is left as it is (a selection, an open traceback);
  // a changed one is drawn again with the tracebacks that were open still open, at the same scroll
  const key = JSON.stringify(run);
  if (panel.dataset.runId === run.id && panel.dataset.key === key && !UNFINISHED.includes(run.status)) return;
  const same = panel.dataset.runId === run.id;
  const opened = same ? new Set([...panel.querySelectorAll("details[open]")].map((d) => d.dataset.key)) : new Set();
  const scrolled = same ? panel.scrollTop : 0;
  const unfinished = UNFINISHED.includes(run.status);
  const keepEdit = panel.dataset.runId === run.id ? $("#rerun-arguments") : null;
  // a notice (cancelled, replayed) outlives the refresh that re-renders the same run
  const notice = panel.dataset.runId === run.id && byTestId("detail-notice") ? [...byTestId("detail-notice").childNodes] : [];
  const edited = keepEdit && keepEdit.dataset.dirty ? keepEdit.value : null;
  const history = run.history || [];
  const steps = run.steps || [];
  panel.dataset.runId = run.id;
  const rerun = h("textarea", { id: "rerun-arguments", testid: "rerun-arguments", spellcheck: "false",
    oninput: (e) => { e.target.dataset.dirty = "1"; } }, edited ?? pretty(run.arguments));
  if (edited !== null) rerun.dataset.dirty = "1";
  const chain = run.replay_of ? (chains.get(run.id) || [run.replay_of]) : [];
  panel.replaceChildren(...[
    h("h2", {}, "Run ", h("span", { class: "mono" }, shortId(run.id)), badge(run.status),
      h("button", { type: "button", class: "close", title: "close", testid: "detail-close", onclick: hooks.closeRun }, "×")),
    h("div", { class: "run-id", testid: "detail-id", title: run.id }, run.id),
    h("dl", { class: "kv" },
      kv("function", run.function, "detail-function"),
      kv("queue", run.queue || "default", "detail-queue"),
      kv("attempts", `${run.attempts} of at most ${run.max_attempts}`),
      kv("enqueued", fmtTime(run.enqueued_at), "detail-enqueued"),
      run.scheduled_for ? kv("scheduled for", fmtTime(run.scheduled_for)) : null,
      kv("started", fmtTime(run.started_at)),
      kv("finished", fmtTime(run.finished_at)),
      run.waiting_for ? kv("waiting for", run.waiting_for, "detail-waiting-for") : null,
      kv("duration", fmtDuration(run.duration_ms), "detail-span"),
      kv("time in attempts", run.time_in_attempts_ms === null || run.time_in_attempts_ms === undefined ? "—"
        : `${fmtDuration(run.time_in_attempts_ms)} over ${history.length} attempt${history.length === 1 ? "" : "s"}`, "detail-attempts-total"),
      kv("trace id", run.trace_id || "—", "detail-trace-id"),
      run.deadline ? kv("deadline", fmtTime(run.deadline)) : null,
      run.replay_of ? kv("replay of", h("span", { class: "chain", testid: "replay-chain" }, chainLinks(chain))) : null),
    h("div", { class: "toolbar", style: "margin-top:8px" },
      run.status === "failed" ? h("button", { type: "button", testid: "detail-replay-button", onclick: (e) => replay(run.id, e.currentTarget, "detail-notice") }, "Replay") : null,
      unfinished ? h("button", { type: "button", class: "danger", testid: "detail-cancel-button", onclick: (e) => cancel(run.id, e.currentTarget) }, "Cancel") : null),
    h("div", { testid: "detail-notice" }, ...notice),
    run.last_error ? [h("h3", {}, "last error", run.error_type ? ` · ${run.error_type}` : ""), h("pre", { class: "notice err", testid: "detail-error" }, run.last_error)] : null,
    steps.length ? [h("h3", {}, "steps ", h("span", { class: "count", testid: "steps-count" }, `${steps.length}`)), waterfall(steps)] : null,
    h("h3", {}, "attempts"),
    history.length ? [timeline(run), h("ol", { class: "attempts", testid: "detail-attempts" }, history.map(attempt))] : h("div", { class: "empty" }, "not started yet"),
    h("h3", {}, "arguments"), h("pre", { testid: "detail-arguments" }, pretty(run.arguments)),
    h("h3", {}, "result"), h("pre", { testid: "detail-result" }, run.result === null || run.result === undefined ? "—" : pretty(run.result)),
    h("h3", {}, "run again with these arguments"), rerun,
    h("div", { style: "margin-top:6px" }, h("button", { type: "button", class: "primary", testid: "rerun-submit", onclick: (e) => rerunWith(run, e.currentTarget) }, "Run again")),
    h("div", { testid: "rerun-result" }),
  ].flat().filter((child) => child !== null && child !== undefined));
  for (const d of panel.querySelectorAll("details")) d.open = opened.has(d.dataset.key);
  panel.dataset.key = key;
  panel.hidden = false;
  $("#runs-layout").classList.add("with-detail");
  panel.scrollTop = scrolled;
  loadChain(run);
}

async function cancel(id, button) {
  button.disabled = true;
  try {
    await api(`/api/runs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    notify("detail-notice", "ok", `Run ${shortId(id)} cancelled.`);
    await hooks.refresh();
  } catch (err) {
    if (!(err instanceof AuthNeeded)) notify("detail-notice", "err", `Cancel of ${shortId(id)} failed: ${describeError(err)}`);
    button.disabled = false;
  }
}

async function rerunWith(run, button) {
  button.disabled = true;
  try {
    const created = await api(`/api/functions/${encodeURIComponent(run.function)}/runs`, {
      method: "POST", body: $("#rerun-arguments").value, headers: { "Content-Type": "application/json" } });
    hooks.openRun(created.id);
    notify("rerun-result", "ok", "Queued run ", runLink(created.id, "rerun-link"), ` (${created.status}).`);
    await hooks.refresh();
  } catch (err) {
    if (!(err instanceof AuthNeeded)) notify("rerun-result", "err", describeError(err));
  } finally {
    button.disabled = false;
  }
}

export function renderDetailError(id, err) {
  const panel = byTestId("run-detail");
  panel.dataset.runId = "";
  panel.replaceChildren(h("h2", {}, "Run ", h("span", { class: "mono" }, id),
      h("button", { type: "button", class: "close", testid: "detail-close", onclick: hooks.closeRun }, "×")),
    h("div", { class: "notice err" }, describeError(err)));
  panel.hidden = false;
  $("#runs-layout").classList.add("with-detail");
}

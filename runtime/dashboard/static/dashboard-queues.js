// The queues view, after Asynqmon: per queue (GET /api/queues) its weight, paused or active, the tasks
// waiting (and how long the oldest has waited), running, scheduled, retrying and dead, the runs finished
// in the last hour, Pause / Resume; a queue's name opens its runs. Below, per queue, the runs processed and
// failed per minute over the last hour (`per_minute`, from the run store: every worker's runs), as a chart.
import {
  api, AuthNeeded, byTestId, describeError, fmtClock, fmtDuration, h, hooks, notify, parseTime, svg,
} from "./dashboard-core.js";

const COLUMNS = [
  ["weight", "weight", "its share of the workers' reads (manifest `queues:`)"],
  ["waiting", "waiting", "in the queue, not yet taken by a worker"],
  ["oldest_waiting_seconds", "oldest waiting", "how long the oldest waiting task has waited"],
  ["running", "running", "taken by a worker"],
  ["scheduled", "scheduled", "waiting for their time (a delay)"],
  ["retrying", "retrying", "waiting for their next attempt"],
  ["dead", "dead", "spent their retries"],
  ["succeeded_last_hour", "succeeded 1 h", "runs that succeeded in the last hour"],
  ["failed_last_hour", "failed 1 h", "runs that failed in the last hour"],
];

// accepts a list of {name, ...counts} or a mapping {name: counts} (optionally under "queues")
export function queueRows(data) {
  if (data && !Array.isArray(data) && data.queues) data = data.queues;
  if (Array.isArray(data)) return data.map((q) => ({ ...q, name: q.name ?? q.queue }));
  return Object.entries(data || {}).map(([name, counts]) => ({ ...counts, name }));
}
function cell(q, key) {
  const value = q[key];
  if (key === "oldest_waiting_seconds") return value === null || value === undefined ? "—" : fmtDuration(value * 1000);
  return value ?? "—";
}

// one queue's last hour: a bar per minute, its processed runs (succeeded below, failed on top)
function minuteChart(q) {
  const minutes = q.per_minute || [];
  const width = 300, height = 60;
  const max = Math.max(1, ...minutes.map((m) => m.processed));
  const step = width / Math.max(1, minutes.length);
  const scale = (n) => (n / max) * (height - 2);
  const chart = svg("svg", { class: "chart small", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
    role: "img", "aria-label": `runs of ${q.name} processed and failed per minute, last hour` });
  minutes.forEach((m, i) => {
    const x = i * step + 0.5, w = Math.max(1, step - 1);
    const ok = scale(m.processed - m.failed), bad = scale(m.failed);
    const at = parseTime(m.minute);
    const g = svg("g", { "data-testid": "queue-minute", "data-processed": m.processed, "data-failed": m.failed },
      svg("title", {}, `${at ? fmtClock(at, false) : m.minute}: ${m.processed} processed, ${m.failed} failed`));
    if (ok) g.append(svg("rect", { class: "ok", x, y: height - ok, width: w, height: ok }));
    if (bad) g.append(svg("rect", { class: "bad", x, y: height - ok - bad, width: w, height: bad }));
    chart.append(g);
  });
  const processed = minutes.reduce((n, m) => n + m.processed, 0), failed = minutes.reduce((n, m) => n + m.failed, 0);
  const first = parseTime(minutes[0] && minutes[0].minute);
  return h("figure", { class: "queue-chart", testid: "queue-chart", "data-queue": q.name, "data-processed": processed, "data-failed": failed },
    h("figcaption", {}, h("span", { class: "mono" }, q.name),
      h("span", { class: `muted${failed ? " bad" : ""}`, testid: "queue-chart-total" }, `${processed} processed, ${failed} failed`)),
    chart, h("div", { class: "chart-axis" }, h("span", {}, first ? fmtClock(first, false) : ""), h("span", {}, `peak ${max}/min`), h("span", {}, "now")));
}

export function renderQueues(data) {
  const rows = queueRows(data);
  byTestId("queue-charts").replaceChildren(...rows.map(minuteChart));
  byTestId("queues-count").textContent = `${rows.length}`;
  const table = byTestId("queues-table");
  table.querySelector("thead").replaceChildren(h("tr", {}, h("th", {}, "queue"), h("th", {}, "state"),
    COLUMNS.map(([, label, help]) => h("th", { class: "num", title: help }, label)), h("th", {})));
  const body = table.querySelector("tbody");
  if (!rows.length) { body.replaceChildren(h("tr", {}, h("td", { colspan: COLUMNS.length + 3, class: "empty" }, "no queues"))); return; }
  body.replaceChildren(...rows.map((q) => h("tr", { testid: "queue-row", "data-queue": q.name, "data-paused": q.paused ? "true" : "false" },
    h("td", { class: "mono" }, h("a", { href: `#${new URLSearchParams({ queue: q.name })}`, testid: "queue-runs-link", title: `the runs of ${q.name}` }, q.name)),
    h("td", {}, q.paused ? h("span", { class: "badge retrying", testid: "queue-state" }, "paused") : h("span", { class: "badge succeeded", testid: "queue-state" }, "active")),
    COLUMNS.map(([key]) => h("td", { class: `num${key === "dead" && q.dead ? " bad" : ""}`, "data-key": key }, cell(q, key))),
    h("td", { style: "text-align:right" }, q.paused
      ? h("button", { type: "button", testid: "queue-resume", onclick: (e) => act(q.name, "resume", e.currentTarget) }, "Resume")
      : h("button", { type: "button", class: "danger", testid: "queue-pause", onclick: (e) => act(q.name, "pause", e.currentTarget) }, "Pause")))));
}

async function act(name, action, button) {
  button.disabled = true;
  try {
    await api(`/api/queues/${encodeURIComponent(name)}/${action}`, { method: "POST" });
    notify("queues-notice", "ok", `Queue ${name} ${action === "pause" ? "paused: workers take nothing from it" : "resumed"}.`);
    await hooks.refresh();
  } catch (err) {
    if (!(err instanceof AuthNeeded)) notify("queues-notice", "err", `${action} of ${name} failed: ${describeError(err)}`);
    button.disabled = false;
  }
}

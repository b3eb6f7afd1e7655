// Flow control in the functions view: each task's settings in words (GET /api/functions' `flow`, from the
// manifest) and what the limits hold now (GET /api/limits, the rows of `runtime limits --json`): per function,
// limit and key, running of the limit, waiting for a slot, throttled, and what acted at enqueue over the last day.
import { byTestId, h } from "./dashboard-core.js";

// seconds as the manifest writes them, the shortest exact unit: 60 -> "1m", 0.5 -> "500ms"
export function fmtPeriod(seconds) {
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
    const amount = seconds / size;
    if (amount >= 1 && Number.isInteger(amount)) return `${amount}${unit}`;
  }
  return `${Math.round(seconds * 1000)}ms`;
}

const per = (key) => (key ? ` per ${key}` : "");

// [short words, what they mean] for each setting the task declares, in the manifest's order
export function flowParts(flow) {
  if (!flow) return [];
  const parts = [];
  for (const c of flow.concurrency || []) {
    parts.push([c.key ? `${c.limit} per ${c.key}` : `${c.limit} at once`,
      `concurrency: at most ${c.limit} running at once${c.key ? ` per value of ${c.key}` : ""}, across every worker`]);
  }
  for (const name of flow.limits || []) parts.push([name, `shares the app-wide limit ${name} (manifest \`limits:\`)`]);
  const t = flow.throttle;
  if (t) {
    parts.push([`${t.limit}/${fmtPeriod(t.period)} throttle${t.burst ? ` +${t.burst}` : ""}${per(t.key)}`,
      `throttle: at most ${t.limit} starts per ${fmtPeriod(t.period)}${t.burst ? `, ${t.burst} more at once` : ""}; the excess starts later, in order`]);
  }
  const r = flow.rate_limit;
  if (r) {
    parts.push([`${r.limit}/${fmtPeriod(r.period)} rate limit${per(r.key)}`,
      `rate limit: at most ${r.limit} runs per ${fmtPeriod(r.period)}; the excess ends skipped, never run`]);
  }
  const d = flow.debounce;
  if (d) {
    parts.push([`debounce ${fmtPeriod(d.period)}${per(d.key)}`,
      `debounce: one run with the last arguments, ${fmtPeriod(d.period)} after the last enqueue${d.timeout ? `, at most ${fmtPeriod(d.timeout)} after the first` : ""}`]);
  }
  const b = flow.batch;
  if (b) {
    parts.push([`batch ${b.size} or ${fmtPeriod(b.timeout)}${per(b.key)}`,
      `batch: one run gets up to ${b.size} items, fewer after ${fmtPeriod(b.timeout)}`]);
  }
  return parts;
}

// the functions table's "limits" cell
export function flowCell(f) {
  const parts = f.kind === "task" ? flowParts(f.flow) : [];
  if (!parts.length) return h("td", { class: "flow-text muted", testid: "function-limits" }, "—");
  const items = parts.flatMap(([words, meaning], i) => [i ? " · " : "", h("span", { title: meaning }, words)]);
  return h("td", { class: "flow-text", testid: "function-limits" }, items);
}

const COUNTS = [
  ["waiting", "waiting", "waiting for a slot of this limit"],
  ["throttled", "throttled", "waiting for their turn under a throttle"],
  ["skipped", "skipped", "turned away by a rate limit (last day)"],
  ["debounced", "debounced", "enqueues folded into a later run by a debounce (last day)"],
  ["batched", "batched", "items collected into batch runs (last day)"],
];
const load = (row) => (row.running || 0) + COUNTS.reduce((n, [key]) => n + (row[key] || 0), 0);

// the busiest first; then by function, limit and key, so the order holds still between refreshes
export function busiestFirst(rows) {
  const name = (row) => `${row.function}\n${row.limit}\n${row.key ?? ""}`;
  return [...rows].sort((a, b) => load(b) - load(a) || name(a).localeCompare(name(b)));
}

export function renderFlowNow(data) {
  const rows = busiestFirst(Array.isArray(data) ? data : []);
  byTestId("flow-count").textContent = `${rows.length}`;
  const table = byTestId("flow-table");
  table.querySelector("thead").replaceChildren(header());
  const body = table.querySelector("tbody");
  if (!rows.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: COUNTS.length + 4, class: "empty" }, "no function declares flow control")));
    return;
  }
  body.replaceChildren(...rows.map((row) => {
    const shared = row.function === "*";
    return h("tr", { testid: "flow-row", "data-function": row.function, "data-limit": row.limit, "data-key": row.key ?? "" },
      h("td", { class: "mono", title: shared ? "an app-wide limit, shared by the functions that name it" : null }, shared ? "* (shared)" : row.function),
      h("td", {}, row.limit.replace("rate_limit", "rate limit")),
      h("td", { class: `mono${row.key === null || row.key === "" ? " muted" : ""}` }, row.key === null || row.key === "" ? "—" : row.key),
      h("td", { class: `num${row.max !== null && row.running >= row.max ? " full" : ""}`, "data-key": "running",
        title: row.max === null ? null : `${row.running} running of at most ${row.max}` },
        row.max === null ? (row.running ? `${row.running}` : "—") : `${row.running}/${row.max}`),
      COUNTS.map(([key]) => h("td", { class: `num${row[key] ? "" : " muted"}`, "data-key": key }, `${row[key] || 0}`)));
  }));
}

function header() {
  return h("tr", {}, h("th", {}, "function"), h("th", {}, "limit"), h("th", {}, "key"),
    h("th", { class: "num", title: "holding a slot, of the limit" }, "running"),
    COUNTS.map(([, label, help]) => h("th", { class: "num", title: help }, label)));
}

// The queues view: per queue, its counts per state (GET /api/queues) and Pause / Resume.
import { api, AuthNeeded, byTestId, describeError, h, hooks, notify } from "./dashboard-core.js";

const ORDER = ["waiting", "running", "scheduled", "retrying", "dead", "succeeded_last_hour", "failed_last_hour"];

// accepts a list of {name, ...counts} or a mapping {name: counts} (optionally under "queues")
export function queueRows(data) {
  if (data && !Array.isArray(data) && data.queues) data = data.queues;
  if (Array.isArray(data)) return data.map((q) => ({ ...q, name: q.name ?? q.queue }));
  return Object.entries(data || {}).map(([name, counts]) => ({ ...counts, name }));
}
function label(key) { return key.replace(/_/g, " "); }
function cell(value) {
  if (value && typeof value === "object") return Object.entries(value).map(([k, v]) => `${k} ${v}`).join(", ");
  return value ?? "—";
}

export function renderQueues(data) {
  const rows = queueRows(data);
  byTestId("queues-count").textContent = `${rows.length}`;
  const keys = [...new Set(rows.flatMap((q) => Object.keys(q)))].filter((k) => k !== "name" && k !== "queue" && k !== "paused");
  keys.sort((a, b) => (ORDER.indexOf(a) + 1 || 99) - (ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b));
  const table = byTestId("queues-table");
  table.querySelector("thead").replaceChildren(h("tr", {}, h("th", {}, "queue"), h("th", {}, "state"),
    keys.map((k) => h("th", { class: "num" }, label(k))), h("th", {})));
  const body = table.querySelector("tbody");
  if (!rows.length) { body.replaceChildren(h("tr", {}, h("td", { colspan: keys.length + 3, class: "empty" }, "no queues"))); return; }
  body.replaceChildren(...rows.map((q) => h("tr", { testid: "queue-row", "data-queue": q.name, "data-paused": q.paused ? "true" : "false" },
    h("td", { class: "mono" }, q.name),
    h("td", {}, q.paused ? h("span", { class: "badge retrying", testid: "queue-state" }, "paused") : h("span", { class: "badge succeeded", testid: "queue-state" }, "active")),
    keys.map((k) => h("td", { class: "num", "data-key": k }, cell(q[k]))),
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

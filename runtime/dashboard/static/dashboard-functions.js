// The functions view: the manifest's functions (with their flow control, dashboard-flow.js), cron schedules (next fire, last run), and the invoke
// console for HTTP functions (the emulator only: POST /api/invoke calls its web app in-process).
import { $, api, AuthNeeded, badge, byTestId, describeError, fmtTime, h, notify, runLink } from "./dashboard-core.js";
import { flowCell } from "./dashboard-flow.js";

let functionsKey = "";

export function renderFunctions(functions) {
  const key = JSON.stringify(functions);
  if (key === functionsKey) return false;
  functionsKey = key;
  byTestId("functions-count").textContent = `${functions.length}`;
  const body = byTestId("functions-table").querySelector("tbody");
  body.replaceChildren(...functions.map((f) => {
    const isTask = f.kind === "task";
    const where = isTask ? (f.schedule ? h("span", { class: "mono", title: "cron, UTC" }, f.schedule) : h("span", { class: "muted" }, "on demand"))
      : h("span", { class: "mono" }, `${(f.methods || []).join(", ")} ${f.route}`);
    return h("tr", { testid: "function-row", "data-function": f.name },
      h("td", { class: "mono" }, f.name), h("td", {}, h("span", { class: "badge kind" }, f.kind)), h("td", {}, where),
      h("td", { class: "mono" }, isTask ? (f.queue || "default") : "—"),
      h("td", { class: "num" }, isTask ? f.retries : "—"), h("td", { class: "num" }, isTask ? f.timeout : "—"),
      h("td", { class: "num" }, isTask ? f.concurrency : "—"), flowCell(f));
  }));
  const routes = functions.filter((f) => f.kind === "http");
  const select = $("#invoke-function");
  const chosen = select.value;
  select.replaceChildren(...routes.map((f) => h("option", { value: f.name }, `${f.name}  ${f.route}`)));
  if (chosen && routes.some((f) => f.name === chosen)) select.value = chosen;
  else pickRoute(routes[0]);
  return true;
}

function pickRoute(f) {
  if (!f) return;
  $("#invoke-method").replaceChildren(...(f.methods || ["GET"]).map((m) => h("option", { value: m }, m)));
  $("#invoke-path").value = f.route;
}

export function renderSchedules(rows) {
  byTestId("schedules-count").textContent = `${rows.length}`;
  const body = byTestId("schedules-table").querySelector("tbody");
  if (!rows.length) { body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "no cron functions"))); return; }
  body.replaceChildren(...rows.map((s) => h("tr", { testid: "schedule-row", "data-function": s.name },
    h("td", { class: "mono" }, s.name), h("td", { class: "mono" }, s.schedule),
    h("td", { class: "mono time", testid: "schedule-next", title: s.next_fire || null }, fmtTime(s.next_fire)),
    h("td", { testid: "schedule-last" }, s.last_run ? [runLink(s.last_run.id, "schedule-last-link"), " ", h("span", { class: "mono muted" }, fmtTime(s.last_run.enqueued_at))] : h("span", { class: "muted" }, "never")),
    h("td", {}, s.last_run ? badge(s.last_run.status) : ""))));
}

export function wireFunctions(getFunctions) {
  $("#invoke-function").addEventListener("change", (e) => pickRoute(getFunctions().find((f) => f.name === e.target.value)));
  $("#invoke-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = byTestId("invoke-submit");
    button.disabled = true;
    const text = $("#invoke-body").value;
    try {
      const answer = await api("/api/invoke", { method: "POST", json: { method: $("#invoke-method").value, path: $("#invoke-path").value, body: text.trim() ? text : null } });
      let shown = answer.body;
      try { shown = JSON.stringify(JSON.parse(answer.body), null, 2); } catch (err) { /* not JSON: as is */ }
      byTestId("invoke-result").replaceChildren(
        h("div", { class: `notice ${answer.status < 400 ? "ok" : "err"}`, testid: "invoke-status" }, `${answer.status} · ${answer.duration_ms} ms`),
        h("pre", { testid: "invoke-response" }, shown));
    } catch (err) {
      if (!(err instanceof AuthNeeded)) notify("invoke-result", "err", describeError(err));
    } finally {
      button.disabled = false;
    }
  });
}

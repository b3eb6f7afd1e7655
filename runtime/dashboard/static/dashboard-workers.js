// The workers view: the live workers each publish (runtime/ops/presence.py; gone after 30 s of silence).
import { ago, byTestId, fmtTime, h } from "./dashboard-core.js";

export function renderWorkers(workers) {
  byTestId("workers-count").textContent = `${workers.length}`;
  const body = byTestId("workers-table").querySelector("tbody");
  if (!workers.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "no live workers (each publishes itself every few seconds)")));
    return;
  }
  body.replaceChildren(...workers.map((w) => h("tr", { testid: "worker-row", "data-worker": w.name },
    h("td", { class: "mono", testid: "worker-name" }, w.name), h("td", { class: "mono" }, w.host ?? "—"),
    h("td", { class: "num mono" }, w.pid ?? "—"), h("td", { class: "mono" }, (w.queues || []).join(", ")),
    h("td", { class: "num", testid: "worker-running" }, w.running ?? 0),
    h("td", { title: fmtTime(w.heartbeat), testid: "worker-heartbeat" }, ago(w.heartbeat)),
    h("td", { class: "mono time" }, fmtTime(w.started)))));
}

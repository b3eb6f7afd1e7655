// The workers view, after Flower: each live worker (runtime/ops/presence.py; gone after 30 s of silence)
// with its queues, concurrency, the runs it holds now (links to them: from the queues' start marks, with
// their function, and those its last heartbeat named), the attempts it processed and of them failed since it
// started, uptime and last heartbeat.
import { ago, byTestId, fmtDuration, fmtTime, h, parseTime, runLink } from "./dashboard-core.js";

const SHOWN = 6; // run links per worker; the rest are counted

function held(runs) {
  if (!runs.length) return h("span", { class: "muted" }, "idle");
  return h("div", { class: "runs-held" }, runs.slice(0, SHOWN).map((r) =>
    h("span", { testid: "worker-run", "data-run-id": r.run_id,
      title: r.function ? `${r.function} · attempt ${r.attempt} · since ${fmtTime(r.started_at)}` : "running at its last heartbeat" },
      runLink(r.run_id, "worker-run-link"), r.function ? h("span", { class: "muted mono" }, ` ${r.function}`) : null)),
    runs.length > SHOWN ? h("span", { class: "muted" }, `+${runs.length - SHOWN} more`) : null);
}

export function renderWorkers(workers) {
  byTestId("workers-count").textContent = `${workers.length}`;
  const body = byTestId("workers-table").querySelector("tbody");
  if (!workers.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 11, class: "empty" }, "no live workers (each publishes itself every few seconds)")));
    return;
  }
  body.replaceChildren(...workers.map((w) => {
    const started = parseTime(w.started);
    // the start marks are fresh; the heartbeat's list (up to 3 s old) adds what no start mark names
    const marked = new Set((w.runs || []).map((r) => r.run_id));
    const runs = [...(w.runs || []), ...(w.running_runs || []).filter((id) => !marked.has(id)).map((id) => ({ run_id: id }))];
    return h("tr", { testid: "worker-row", "data-worker": w.name },
      h("td", { class: "mono", testid: "worker-name" }, w.name),
      h("td", { class: "mono" }, `${w.host ?? "—"}:${w.pid ?? "—"}`),
      h("td", { class: "mono" }, (w.queues || []).join(", ")),
      h("td", { class: "num", testid: "worker-concurrency" }, w.concurrency ?? "—"),
      h("td", { class: "num", testid: "worker-running" }, w.running ?? runs.length),
      h("td", { testid: "worker-runs" }, held(runs)),
      h("td", { class: "num", testid: "worker-processed" }, w.processed ?? "—"),
      h("td", { class: `num${w.failed ? " bad" : ""}`, testid: "worker-failed" }, w.failed ?? "—"),
      h("td", { class: "num", testid: "worker-uptime", title: fmtTime(w.started) }, started ? fmtDuration(Date.now() - started) : "—"),
      h("td", { title: fmtTime(w.heartbeat), testid: "worker-heartbeat" }, ago(w.heartbeat)));
  }));
}

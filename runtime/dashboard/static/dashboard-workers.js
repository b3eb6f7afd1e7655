// The workers view, after Flower: each live worker (runtime/ops/presence.py; gone after 30 s of silence)
// with its queues, concurrency, the runs it holds now (links to them), processed and failed since it
// started (when its presence record carries them), uptime and last heartbeat.
import { ago, byTestId, fmtDuration, fmtTime, h, parseTime, runLink } from "./dashboard-core.js";

const SHOWN = 6; // run links per worker; the rest are counted

function held(runs) {
  if (!runs.length) return h("span", { class: "muted" }, "idle");
  return h("div", { class: "runs-held" }, runs.slice(0, SHOWN).map((r) =>
    h("span", { testid: "worker-run", title: `${r.function} · attempt ${r.attempt} · since ${fmtTime(r.started_at)}` },
      runLink(r.run_id, "worker-run-link"), h("span", { class: "muted mono" }, ` ${r.function}`))),
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
    const runs = w.runs || [];
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

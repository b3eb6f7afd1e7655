// The events view, after Inngest's dev server: the recent events (GET /api/events, newest first) with their
// data and links to the runs each started (`task: {on: [...]}`) and woke (`ctx.wait_for_event`), and a form
// that sends one (POST /api/events).
import { $, api, AuthNeeded, byTestId, describeError, h, hooks, notify, runLink, timeCell, truncate } from "./dashboard-core.js";

let eventsKey = "";

function runs(ids, testid) {
  const list = (ids || []).map((r) => (typeof r === "string" ? r : r && r.id)).filter(Boolean);
  if (!list.length) return h("span", { class: "muted" }, "—");
  return h("span", { class: "runs-held" }, list.map((id) => runLink(id, testid)));
}

export function renderEvents(events) {
  const key = JSON.stringify(events);
  if (key === eventsKey) return;
  eventsKey = key;
  byTestId("events-count").textContent = `${events.length}`;
  const body = byTestId("events-table").querySelector("tbody");
  if (!events.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "no events yet (send one below, or with `runtime events send`)")));
    return;
  }
  body.replaceChildren(...events.map((e) => {
    const data = JSON.stringify(e.data ?? {});
    return h("tr", { testid: "event-row", "data-event": e.name, "data-event-id": e.id },
      timeCell(e.at),
      h("td", { class: "mono", testid: "event-name" }, e.name),
      h("td", { class: "mono muted", title: e.id }, truncate(e.id, 20)),
      h("td", { class: "mono data-text", testid: "event-data", title: data }, truncate(data, 200)),
      h("td", { testid: "event-started" }, runs(e.started, "event-started-link")),
      h("td", { testid: "event-woke" }, runs(e.woke, "event-woke-link")));
  }));
}

export function wireEvents() {
  $("#event-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = byTestId("event-submit");
    const name = $("#event-name").value.trim();
    if (!name) { notify("event-result", "err", "An event needs a name."); return; }
    let data;
    try { data = JSON.parse($("#event-data").value || "{}"); } catch (err) {
      notify("event-result", "err", `The data are not JSON: ${err.message}`); return;
    }
    const body = { name, data };
    const id = $("#event-id").value.trim();
    if (id) body.id = id;
    button.disabled = true;
    try {
      const sent = await api("/api/events", { method: "POST", json: body });
      const what = sent.duplicate ? `Event ${sent.id} was already sent: nothing new started.`
        : `Sent ${sent.name}: started ${sent.started.length} run(s), woke ${sent.woke.length}.`;
      notify("event-result", "ok", what);
      await hooks.refresh();
    } catch (err) {
      if (!(err instanceof AuthNeeded)) notify("event-result", "err", describeError(err));
    } finally {
      button.disabled = false;
    }
  });
}

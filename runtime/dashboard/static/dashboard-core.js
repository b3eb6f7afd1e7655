// Shared by every view: DOM helpers (data goes in as text, never as HTML), times (one 24 h format, in the
// browser's timezone, which the header names once),
// the API client (bearer token from this tab), the page's state and the URL hash that keeps it.

// every run status the API has (runtime/store/models.py STATUSES); `waiting`: suspended in ctx.sleep,
// ctx.wait_for_event or ctx.invoke, holding no worker; `skipped`: never run, a rate limit turned it away
export const STATUSES = ["scheduled", "queued", "running", "retrying", "waiting", "succeeded", "failed", "cancelled", "skipped"];
export const UNFINISHED = ["scheduled", "queued", "running", "retrying", "waiting"];
export const PAGE_SIZE = 100;
const TOKEN_KEY = "dashboardToken";

export const state = {
  view: "runs", fn: "", status: "", queue: "", search: "", offset: 0, run: "",
  functions: [], needAuth: false, busy: false, selected: new Set(),
};

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
// an SVG element (charts are drawn by the page itself: no library, no CDN)
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}
export const $ = (sel) => document.querySelector(sel);
export const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

export function badge(status) {
  return h("span", { class: `badge ${STATUSES.includes(status) ? status : ""}`, testid: "run-status" }, status);
}
export function shortId(id) { return String(id || "").slice(-8); }  // run ids are time-ordered: their end tells them apart
export function pad(n) { return String(n).padStart(2, "0"); }
export function parseTime(value) {
  if (value instanceof Date) return value;
  if (value === null || value === undefined || value === "") return null;
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return isNaN(d.getTime()) ? null : d;
}
// the browser's timezone as an offset, "UTC+05:30"
export function tzLabel(d) {
  const minutes = -(d || new Date()).getTimezoneOffset();
  if (minutes === 0) return "UTC";
  const sign = minutes > 0 ? "+" : "-";
  return `UTC${sign}${pad(Math.floor(Math.abs(minutes) / 60))}:${pad(Math.abs(minutes) % 60)}`;
}
// the timezone once, for the header: "Asia/Kolkata (UTC+05:30)", or "UTC" alone
export function tzText() {
  const label = tzLabel();
  let name = "";
  try { name = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { /* an offset will do */ }
  const utc = /^(Etc\/)?(UTC|UCT|GMT|Universal|Zulu)$/.test(name) && label === "UTC";
  return !name || name === label || utc ? label : `${name} (${label})`;
}
// every time on the page: "2026-12-06 22:14:05", 24 h, in the browser's timezone (named in the header)
export function fmtTime(value) {
  const d = parseTime(value);
  if (!d) return "—";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtClock(d)}`;
}
export function fmtClock(value, seconds = true) {
  const d = parseTime(value);
  if (!d) return "—";
  return `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ""}`;
}
export function timeCell(value) {
  const d = parseTime(value);
  return h("td", { title: d ? d.toISOString() : null, class: "mono time" }, fmtTime(value));
}
export function ago(value) {
  const d = parseTime(value);
  if (!d) return "—";
  const s = Math.max(0, Math.round((Date.now() - d) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return "—";
  if (ms < 1) return "<1 ms";
  if (Math.round(ms) < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}
export function truncate(text, n) { text = String(text ?? ""); return text.length > n ? text.slice(0, n - 1) + "…" : text; }
export function pretty(value) { return value === undefined ? "" : JSON.stringify(value, null, 2); }

// ---- the API -------------------------------------------------------------------------------------
export class AuthNeeded extends Error {}
export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status; this.body = body;
  }
}
export async function api(path, options) {
  options = options || {};
  const headers = Object.assign({ "Accept": "application/json" }, options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = `Bearer ${token}`;
  let body = options.body;
  if (options.json !== undefined) { body = JSON.stringify(options.json); headers["Content-Type"] = "application/json"; }
  const response = await fetch(path, { method: options.method || "GET", headers, body, credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) { askForToken(token ? "That token was not accepted." : ""); throw new AuthNeeded("token needed"); }
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}
export function describeError(err) {
  if (err instanceof ApiError) {
    let text = `${err.status}: ${err.message}`;
    const extra = Object.assign({}, err.body || {}); delete extra.error;
    if (Object.keys(extra).length) text += "\n" + pretty(extra);
    return text;
  }
  return String(err && err.message ? err.message : err);
}
export function notify(testid, kind, ...content) {
  byTestId(testid).replaceChildren(h("div", { class: `notice ${kind}` }, ...content));
}

// ---- the token prompt ----------------------------------------------------------------------------
export function askForToken(message) {
  state.needAuth = true;
  $("#auth").hidden = false;
  byTestId("token-error").replaceChildren(message ? h("div", { class: "notice err" }, message) : "");
  $("#auth-token").focus();
}
export function saveToken(token) { sessionStorage.setItem(TOKEN_KEY, token); }

// ---- the URL hash keeps the view, the filters and the open run -----------------------------------
export const VIEWS = ["runs", "queues", "workers", "functions", "events"];
export function readHash() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  state.view = VIEWS.includes(params.get("view")) ? params.get("view") : "runs";
  state.fn = params.get("function") || "";
  state.status = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  state.queue = params.get("queue") || "";
  state.search = params.get("search") || "";
  state.offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  state.run = params.get("run") || "";
}
export function writeHash() {
  const params = new URLSearchParams();
  if (state.view !== "runs") params.set("view", state.view);
  if (state.fn) params.set("function", state.fn);
  if (state.status) params.set("status", state.status);
  if (state.queue) params.set("queue", state.queue);
  if (state.search) params.set("search", state.search);
  if (state.offset) params.set("offset", String(state.offset));
  if (state.run) params.set("run", state.run);
  const hash = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (hash ? `#${hash}` : ""));
}

// views call `refresh()` after an action; main.js sets the real one
export const hooks = { refresh: async () => {}, openRun: (id) => {} };
export function runLink(id, testid) {
  return h("a", { href: "#", class: "mono", title: id, testid: testid || "run-link",
    onclick: (e) => { e.preventDefault(); e.stopPropagation(); hooks.openRun(id); } }, shortId(id));
}

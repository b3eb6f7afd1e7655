"""The dashboard: runs, queues, retries and dead letters in a browser, and the JSON API behind it.

GET  /api/runs?function=&status=&queue=&search=&limit=&offset=   runs, newest first (search: an id's
                                                  start or end, or text in the arguments)
GET  /api/runs/{id}                               one run, with each attempt's error
POST /api/runs/{id}/replay                        a failed run queued again; returns the new run
POST /api/runs/{id}/cancel                        cancel a run; returns it
POST /api/runs/replay, /api/runs/delete           in bulk: {"ids": [...]} or {"status": "failed",
                                                  "function": ..., "since": seconds}; returns the count
DELETE /api/runs/{id}                             forget a run (and its dead letter)
GET  /api/queues                                  per queue: depths, paused, finished in the last hour, its
                                                  weight, the age of its oldest waiting task, and `per_minute`:
                                                  [{minute, processed, failed}], the last hour
POST /api/queues/{name}/pause, .../resume         pause / resume a queue
GET  /api/dead-letters                            runs that spent their retries
GET  /api/app                                     the app's name, for the page's header in every view
GET  /api/functions                               the manifest's functions, effective settings; a task's
                                                  `arguments` is the JSON schema of its parameters
POST /api/functions/{name}/runs                   enqueue a task (JSON body: its arguments)
GET  /api/stats                                   runs per status (`statuses`) and per function and status
                                                  (`runs`), queue depths (`queue`: totals; `queues`: as
                                                  /api/queues without the last hour), the workers executing
GET  /metrics                                     Prometheus text (runtime/ops/metrics.py); needs the token too
GET  /api/workers                                 live workers (runtime/ops/presence.py: concurrency, processed,
                                                  failed, running_runs), each with `runs`, the runs it holds now
                                                  with their function (from the queues' start marks)
GET  /api/throughput                              runs finished per minute, succeeded and failed, last hour
GET  /api/schedules                               cron functions: next fire time and last run
POST /api/invoke                                  call an HTTP function (emulator only): {method, path, body}
GET  /assets/{file}, /favicon.ico                 the page's scripts, styles, icon (runtime/dashboard/static/dashboard*)

Writes (POST/PUT/PATCH/DELETE) that carry a body must send it as `application/json`, so a page on
another site cannot forge one with a "simple" cross-origin request; the emulator's dashboard, which has
no token, also refuses any request whose `Host` or `Origin` is not one of its own addresses (DNS
rebinding, cross-site requests): runtime/dashboard/guards.py. Every JSON answer is redacted
(runtime/redaction.py). While the app fails to load, the emulator serves runtime/dashboard/broken.py instead.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from runtime.app.connections import Runtime
from runtime.dashboard import live_state
from runtime.dashboard.events import event_routes
from runtime.dashboard.guards import RequestGuard, TokenAuth
from runtime.dashboard.page import PAGE, PAGE_HEADERS, asset, favicon
from runtime.dashboard.responses import RedactedJSONResponse, _error, _limit
from runtime.dashboard.run_counts import RunCounts
from runtime.errors import ArgumentsError, ConfigError
from runtime.flow.state import limits_now
from runtime.ops import operations, presence
from runtime.ops.metrics import HttpMetrics, dead_letter_threshold, metrics_route
from runtime.store.values import STATUSES, iso
from runtime.web.app import health_routes
from runtime.web.errors import http_error

MIN_TOKEN_LENGTH = 16


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _next_fire(schedule: str, now: datetime) -> str | None:
    from croniter import croniter  # here: only an app with a schedule needs it

    try:
        fire = croniter(schedule, now).get_next(datetime)
    except (ValueError, KeyError):
        return None
    return iso(fire)


def _selection(spec: Any) -> tuple[list[str] | None, operations.RunFilter | None] | str:
    """The runs a bulk request names: `{"ids": [...]}` or a filter; else what is wrong with it."""
    if not isinstance(spec, dict) or not spec:
        return 'send {"ids": [...]} or a filter such as {"status": "failed", "function": ..., "since": 3600}'
    if "ids" in spec:
        ids = spec["ids"]
        if set(spec) != {"ids"} or not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return '"ids" must be a list of run ids, given alone'
        return ids, None
    unknown = set(spec) - {"status", "function", "since"}
    if unknown:
        return f"unknown filter field(s) {', '.join(sorted(unknown))}; use status, function and since (seconds)"
    since = spec.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
        return f'"since" must be a number of seconds, not {since!r:.40}'
    try:
        return None, operations.RunFilter(
            status=spec.get("status", "failed"), function=spec.get("function"), since=since
        )
    except ValueError as exc:
        return str(exc)


def create_dashboard_app(
    runtime: Runtime,
    token: str | None = None,
    *,
    allowed_hosts: list[str] | None = None,
    web_app: ASGIApp | None = None,
) -> Starlette:
    """The dashboard app. `token` (DASHBOARD_TOKEN, at least 16 characters) locks it; `allowed_hosts`
    (`host:port` values, see `local_addresses`) makes it refuse any other `Host` or `Origin`; `web_app` (the
    emulator's web app, in the same process) enables `POST /api/invoke`."""
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"DASHBOARD_TOKEN is too short ({len(token)} characters): use at least {MIN_TOKEN_LENGTH}, "
            "e.g. the output of `openssl rand -hex 32`"
        )
    store = runtime.store
    redis = runtime.broker.redis
    keys = runtime.keys
    counts = RunCounts(store)

    async def page(request: Request) -> Response:
        if not PAGE.exists():
            return _error(404, "the dashboard page is not installed; the JSON API is under /api/")
        return FileResponse(PAGE, headers=PAGE_HEADERS)

    async def list_runs(request: Request) -> Response:
        params = request.query_params
        try:
            offset = max(0, int(params.get("offset", 0)))
        except ValueError:
            return _error(400, "offset must be a whole number")
        try:
            runs = await operations.list_runs(
                runtime,
                function=params.get("function") or None,
                status=params.get("status") or None,
                queue=params.get("queue") or None,
                search=params.get("search") or None,
                limit=_limit(request),
                offset=offset,
            )
        except ValueError as exc:
            return _error(400, str(exc))
        return RedactedJSONResponse([run.public() for run in runs])

    async def get_run(request: Request) -> Response:
        run = await store.get(request.path_params["run_id"])
        if run is None:
            return _error(404, f"no run with id {request.path_params['run_id']!r}")
        return RedactedJSONResponse(run.public() | {"steps": await store.steps.of_run(run.id)})

    async def replay(request: Request) -> Response:
        try:
            run = await runtime.replay(request.path_params["run_id"])
        except LookupError as exc:
            return _error(404, str(exc))
        except (ValueError, ArgumentsError) as exc:
            return _error(409, str(exc))
        return RedactedJSONResponse(run.public(), status_code=201)

    async def cancel(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            outcome = await operations.cancel(runtime, [run_id])
        except NotImplementedError as exc:
            return _error(501, str(exc))
        if outcome.errors:
            run = await store.get(run_id)
            return _error(404 if run is None else 409, outcome.errors[run_id])
        return RedactedJSONResponse(outcome.runs[0].public())

    async def bulk(request: Request, action: str) -> Response:
        body = await request.body()
        try:
            spec = json.loads(body) if body.strip() else None
        except ValueError as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        selection = _selection(spec)
        if isinstance(selection, str):
            return _error(422, selection)
        ids, where = selection
        try:
            outcome = await (operations.replay if action == "replay" else operations.delete)(runtime, ids, where)
        except ValueError as exc:
            return _error(422, str(exc))
        answer: dict[str, Any] = {"count": outcome.count}
        if action == "replay":
            answer["ids"] = [run.id for run in outcome.runs]
        answer["errors"] = outcome.errors
        return RedactedJSONResponse(answer)

    async def queues(request: Request) -> Response:
        stats = await operations.queue_stats(runtime)
        per_minute = await store.finished_per_minute(list(stats), 60)  # from the store: every worker's runs
        for name, row in stats.items():
            row["per_minute"] = per_minute[name]
        return RedactedJSONResponse(await live_state.with_weights_and_ages(runtime, stats))

    async def pause_queue(request: Request, action: str) -> Response:
        name = request.path_params["name"]
        try:
            await (operations.pause if action == "pause" else operations.resume)(runtime, name)
        except LookupError as exc:
            return _error(404, str(exc.args[0]))
        return RedactedJSONResponse({"queue": name, "paused": action == "pause"})

    async def delete_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        await runtime.forget_dead_letters([run_id])
        if not await store.delete(run_id):
            return _error(404, f"no run with id {run_id!r}")
        return Response(status_code=204)

    async def dead_letters(request: Request) -> Response:
        ids = [_text(i) for i in await redis.zrevrange(keys.dead, 0, _limit(request) - 1)]
        runs = {run.id: run for run in await store.list(ids=ids, limit=len(ids) or 1)} if ids else {}
        return RedactedJSONResponse([runs[i].public() for i in ids if i in runs])

    async def app_name(request: Request) -> Response:
        return RedactedJSONResponse({"app": runtime.app.name})

    async def functions(request: Request) -> Response:
        rows = runtime.app.manifest.summary()
        for row in rows:
            task = runtime.app.tasks.get(row["name"])
            if task is not None:  # what the "Run a task" form starts from
                row["arguments"] = task.arguments_schema()
        return RedactedJSONResponse(rows)

    async def limits(request: Request) -> Response:
        return RedactedJSONResponse(await limits_now(runtime))  # runtime/flow/state.py: what `runtime limits` shows

    async def enqueue(request: Request) -> Response:
        name = request.path_params["name"]
        fn = runtime.app.tasks.get(name)
        if fn is None:
            return _error(404, f"no task named {name!r}; see GET /api/functions")
        body = await request.body()
        try:
            arguments = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        if not isinstance(arguments, dict):
            return _error(422, "the body must be a JSON object of the task's arguments")
        try:
            delay = float(request.query_params["delay"]) if "delay" in request.query_params else None
            [run] = await runtime.submit(fn, [arguments], delay=delay)
        except (ArgumentsError, ValueError) as exc:
            return _error(422, str(exc))
        from runtime.store.models import Run  # the SQLModel classes: not before the first request that needs them

        return RedactedJSONResponse(Run.model_validate(run).public(), status_code=202)

    async def stats(request: Request) -> Response:
        # the depths of GET /api/queues and `runtime queues` (not their last hour: a query on every poll)
        queues, busy = await asyncio.gather(
            operations.queue_stats(runtime, last_hour=False), operations.running_per_worker(runtime)
        )
        dead = sum(row["dead"] for row in queues.values())
        threshold = dead_letter_threshold(runtime)
        alert = {"threshold": threshold, "count": dead, "over": threshold is not None and dead > threshold}
        runs, age = await counts.get()
        statuses = dict.fromkeys(STATUSES, 0)  # every status, so a page lists each (cancelled too)
        for per_status in runs.values():
            for status, n in per_status.items():
                statuses[status] = statuses.get(status, 0) + n
        return RedactedJSONResponse(
            {
                "app": runtime.app.name,
                "queue": {state: sum(row[state] for row in queues.values()) for state in operations.QUEUE_STATES},
                "queues": queues,
                "statuses": statuses,
                "runs": runs,
                "runs_age_seconds": round(age, 1),
                "workers_running": [{"name": name, "running": n} for name, n in sorted(busy.items())],
                "dead_letter_alert": alert,
            }
        )

    # --- issue 11 §7: workers, throughput, schedules, the invoke console -----------------------------------

    async def workers(request: Request) -> Response:
        running = await live_state.running_by_worker(runtime)
        live = await presence.workers(runtime)  # its times are Unix seconds; the API's are iso()
        times = ("heartbeat", "started")
        return RedactedJSONResponse(
            [w | {key: iso(w.get(key)) for key in times} | {"runs": running.get(str(w.get("name")), [])} for w in live]
        )

    async def throughput(request: Request) -> Response:
        return RedactedJSONResponse(await store.throughput(60))

    async def schedules(request: Request) -> Response:
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = []
        for row in runtime.app.manifest.summary():
            if not row.get("schedule"):
                continue
            last = await store.list(function=row["name"], limit=1)
            rows.append(
                {
                    "name": row["name"],
                    "schedule": row["schedule"],
                    "queue": row.get("queue"),
                    "next_fire": _next_fire(row["schedule"], now),
                    "last_run": last[0].public() if last else None,
                }
            )
        return RedactedJSONResponse(rows)

    async def invoke(request: Request) -> Response:
        if web_app is None:
            return _error(404, "the invoke console works only in the emulator; call the web process's URL instead")
        try:
            call = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        if not isinstance(call, dict) or not str(call.get("path", "")).startswith("/"):
            return _error(422, 'send {"method": "GET", "path": "/...", "body": "..."}; the path starts with /')
        method = str(call.get("method") or "GET").upper()
        body = call.get("body")
        content = body if isinstance(body, str) else (None if body is None else json.dumps(body))
        headers = {"content-type": "application/json"} if content else {}
        import httpx  # only the invoke console uses it: not imported by every process that serves the dashboard

        transport = httpx.ASGITransport(app=web_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            started = time.perf_counter()
            answer = await client.request(method, call["path"], content=content, headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
        return RedactedJSONResponse(
            {
                "status": answer.status_code,
                "headers": dict(answer.headers),
                "body": answer.text,
                "duration_ms": round(elapsed, 2),
            }
        )

    routes = [
        Route("/", page),
        Route("/assets/{name}", asset),
        Route("/favicon.ico", favicon),
        *health_routes(runtime),
        Route("/api/runs", list_runs),
        Route("/api/runs/replay", functools.partial(bulk, action="replay"), methods=["POST"]),
        Route("/api/runs/delete", functools.partial(bulk, action="delete"), methods=["POST"]),
        Route("/api/runs/{run_id}", get_run, methods=["GET"]),
        Route("/api/runs/{run_id}", delete_run, methods=["DELETE"]),
        Route("/api/runs/{run_id}/replay", replay, methods=["POST"]),
        Route("/api/runs/{run_id}/cancel", cancel, methods=["POST"]),
        Route("/api/queues", queues),
        Route("/api/queues/{name}/pause", functools.partial(pause_queue, action="pause"), methods=["POST"]),
        Route("/api/queues/{name}/resume", functools.partial(pause_queue, action="resume"), methods=["POST"]),
        Route("/api/dead-letters", dead_letters),
        Route("/api/app", app_name),
        Route("/api/functions", functions),
        Route("/api/limits", limits),
        Route("/api/functions/{name}/runs", enqueue, methods=["POST"]),
        Route("/api/stats", stats),
        metrics_route(runtime),  # behind the token, like the API (Prometheus sends it as a bearer token)
        # --- issue 11 §7 (dashboard helper): new GET routes and the emulator's invoke console ---
        Route("/api/workers", workers),
        Route("/api/throughput", throughput),
        Route("/api/schedules", schedules),
        Route("/api/invoke", invoke, methods=["POST"]),
        *event_routes(runtime),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    if token:
        app.add_middleware(TokenAuth, token=token)
    app.add_middleware(RequestGuard, allowed_hosts=allowed_hosts)  # refuses before the token check
    app.add_middleware(HttpMetrics, routes=routes)  # outermost: counts refusals too
    return app

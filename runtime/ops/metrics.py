"""Metrics: what a process counts, served as Prometheus text on `GET /metrics`, every name `firstsip_...`.

Each process has one registry (`metrics()`): the worker counts finished runs (runtime/worker/middleware/metrics.py),
a process that enqueues counts the runs a rate limit skipped there (outcome `skipped`: they never reach a worker),
the web process and the dashboard count HTTP requests (`HttpMetrics`), and every process reports the
queues' depths, read from Redis at scrape time (`queue_depths`), so they are there while workers are
scaled to zero. Sync tasks run in child processes, but their runs are counted by the worker's middleware in
the parent, so no multiprocess mode is needed. prometheus_client is imported on first use, not by
`import runtime.worker.worker`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.flow import rate_limit
from runtime.ops.asgi import observed
from runtime.store import steps

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from runtime.app.connections import Runtime

logger = logging.getLogger("runtime.metrics")

PREFIX = "firstsip"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("waiting", "running", "scheduled", "retrying", "dead")
SCRAPE_TIMEOUT = 2.0  # seconds a scrape waits for Redis before it reports the queues as unknown
MAX_DELAYED_READ = 10_000  # delayed messages a scrape reads to tell retries from scheduled runs
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
UNMATCHED = "unmatched"


@dataclass
class Metrics:
    """This process's metrics (one registry, shared by every app and middleware in the process)."""

    registry: CollectorRegistry
    runs_finished: Counter
    steps_saved: Counter
    run_duration: Histogram
    run_latency: Histogram
    http_requests: Counter
    http_duration: Histogram
    http_counts: HttpCounts


_metrics: Metrics | None = None


def metrics() -> Metrics:
    """The process's metrics, created (and prometheus_client imported) on first use."""
    global _metrics
    if _metrics is None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

        registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(namespace=PREFIX, registry=registry)
        http_counts = HttpCounts()
        registry.register(http_counts)  # before the series it fills: a registry collects in the order of registration
        _metrics = Metrics(
            registry=registry,
            runs_finished=Counter(
                "runs_finished",
                "Attempts of runs that finished, by function, queue and outcome (succeeded, retrying, failed, ...)",
                ["function", "queue", "outcome"],
                namespace=PREFIX,
                registry=registry,
            ),
            steps_saved=Counter(
                "steps_saved",
                "Durable steps saved by this process, by status (succeeded, failed; wait: a sleep or wait began)",
                ["status"],
                namespace=PREFIX,
                registry=registry,
            ),
            run_duration=Histogram(
                "run_duration_seconds",
                "How long an attempt of a run took, by function and queue",
                ["function", "queue"],
                namespace=PREFIX,
                registry=registry,
                buckets=RUN_BUCKETS,
            ),
            run_latency=Histogram(
                "run_start_latency_seconds",
                "From enqueue (or the time a delayed run was due) to the start of its first attempt",
                ["function", "queue"],
                namespace=PREFIX,
                registry=registry,
                buckets=RUN_BUCKETS,
            ),
            http_requests=Counter(
                "http_requests",
                "HTTP requests answered, by route template, method and status",
                ["route", "method", "status"],
                namespace=PREFIX,
                registry=registry,
            ),
            http_duration=Histogram(
                "http_request_duration_seconds",
                "How long HTTP requests took to answer, by route template and method",
                ["route", "method"],
                namespace=PREFIX,
                registry=registry,
                buckets=HTTP_BUCKETS,
            ),
            http_counts=http_counts,
        )
    return _metrics


def _count_skipped(function: str, queue: str, count: int) -> None:
    metrics().runs_finished.labels(function, queue, "skipped").inc(count)


rate_limit.skipped_observers.append(_count_skipped)  # once: a module is imported once per process
steps.saved_observers.append(lambda status: metrics().steps_saved.labels(status).inc())


# --- queue depths ----------------------------------------------------------------------------------


# KEYS: a queue's delayed set. ARGV: how many to read -> how many of them are retries. In Redis, so a
# scrape or a dashboard poll moves two numbers, not thousands of messages. A message our runtime wrote begins
# {"task_id":...,"task_name":...,"labels":{"attempt":N (a retry's backoff has N > 1); others are decoded.
_SPLIT_DELAYED = """
local retrying = 0
for _, message in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do
  local attempt = string.match(message, '^{"task_id":"[^"]*","task_name":"[^"]*","labels":{"attempt":(%d+)')
  if attempt == nil then
    local ok, decoded = pcall(cjson.decode, message)
    if ok and type(decoded) == 'table' and type(decoded.labels) == 'table' then attempt = decoded.labels.attempt end
  end
  if type(tonumber(attempt)) == 'number' and tonumber(attempt) > 1 then retrying = retrying + 1 end
end
return retrying
"""


# KEYS: a queue's stream, its start marks. ARGV: the group, the lease (ms) -> how many started entries nobody has
# renewed for a lease: their worker died (on a paused queue nobody reclaims them until it is resumed), so they wait.
_ORPHANED = """
local n = 0
for _, entry in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[2]), '-', '+', 1000)) do
  if redis.call('HEXISTS', KEYS[2], entry[1]) == 1 then n = n + 1 end
end
return n
"""


async def queue_depths(runtime: Runtime) -> dict[str, dict[str, int]]:
    """{queue: {state: count}} for every state in STATES, read from Redis in one round trip per queue, at once.

    running = entries whose task is executing (a worker's start mark, `QueueKeys.started`, renewed within the
    lease: a dead worker's run waits to be reclaimed); waiting = the rest of the stream, whether no worker read
    it yet, a worker holds it read ahead, or a worker handed it back (as it does from a paused queue): none of
    those runs. scheduled and retrying = the delayed set, split
    by the message's attempt (a retry's backoff has attempt > 1); dead = the queue's dead-letter set. Beyond
    MAX_DELAYED_READ delayed messages the rest is counted as scheduled.
    """
    keys = runtime.keys
    manifest = runtime.app.manifest
    redis = runtime.broker.redis
    lease_ms = int(runtime.settings.lease_seconds * 1000)

    async def one(queue: str) -> dict[str, int]:
        qk = keys.queue(queue)
        async with redis.pipeline(transaction=False) as pipe:  # one slot per queue (a cluster's hash tag)
            pipe.xlen(qk.stream)
            pipe.hlen(qk.started)
            pipe.zcard(qk.delayed)
            pipe.eval(_SPLIT_DELAYED, 1, qk.delayed, MAX_DELAYED_READ)
            pipe.zcard(qk.dead)
            pipe.eval(_ORPHANED, 2, qk.stream, qk.started, keys.group, lease_ms)
            length, started, delayed_count, retrying, dead, orphaned = await pipe.execute()
        running = max(0, min(int(started) - int(orphaned), int(length)))
        row = dict.fromkeys(STATES, 0)
        row.update(waiting=int(length) - running, running=running, dead=int(dead), retrying=int(retrying))
        row["scheduled"] = int(delayed_count) - int(retrying)  # beyond MAX_DELAYED_READ: counted as scheduled
        return row

    names = manifest.queue_names()
    rows, all_dead = await asyncio.gather(asyncio.gather(*(one(queue) for queue in names)), redis.zcard(keys.dead))
    depths = dict(zip(names, rows, strict=True))
    # dead letters from before each queue had its own list are only in the app's: the default queue shows them
    legacy = int(all_dead) - sum(row["dead"] for row in depths.values())
    depths.setdefault(manifest.defaults.queue, dict.fromkeys(STATES, 0))["dead"] += max(0, legacy)
    return depths


def dead_letter_threshold(runtime: Runtime) -> float | None:
    """The dead-letter count above which to alert, when the app sets one (hook: no setting exists yet)."""
    value = runtime.app.manifest.dead_letter_alert()
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


async def _queue_families(runtime: Runtime) -> list[Any]:
    from prometheus_client.core import GaugeMetricFamily

    up = GaugeMetricFamily(f"{PREFIX}_queue_depth_up", "1 if the queue depths below were read from Redis, else 0")
    try:
        depths = await asyncio.wait_for(queue_depths(runtime), SCRAPE_TIMEOUT)
    except Exception as exc:
        logger.warning("metrics: cannot read the queue depths from Redis: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Runs in each queue, by state", labels=["queue", "state"])
    for queue, states in sorted(depths.items()):
        for state, count in states.items():
            depth.add_metric([queue, state], count)
    dead = GaugeMetricFamily(f"{PREFIX}_dead_letters", "Runs that spent their retries and wait to be replayed")
    dead.add_metric([], sum(states["dead"] for states in depths.values()))
    families = [up, depth, dead]
    threshold = dead_letter_threshold(runtime)
    if threshold is not None:
        alert = GaugeMetricFamily(
            f"{PREFIX}_dead_letter_alert_threshold", "Alert when firstsip_dead_letters is above this"
        )
        alert.add_metric([], threshold)
        families.append(alert)
    return families


async def _flow_families(runtime: Runtime) -> list[Any]:
    """Flow control now, per function, limit and key (runtime/flow/state.py; the busiest 200 keys of a limit)."""
    from prometheus_client.core import GaugeMetricFamily

    from runtime.flow.state import limits_now

    if not any(spec.task is not None and spec.task.flow() for spec in runtime.app.manifest.tasks().values()):
        return []
    try:
        rows = await asyncio.wait_for(limits_now(runtime), SCRAPE_TIMEOUT)
    except Exception as exc:
        logger.warning("metrics: cannot read the flow-control state from Redis: %s", exc)
        return []
    labels = ["function", "limit", "key"]
    help_texts = {
        "running": "Runs holding a concurrency slot",
        "max": "The concurrency limit",
        "waiting": "Runs waiting for a concurrency slot",
        "throttled": "Runs waiting for their turn under a throttle",
        "skipped": "Runs skipped by a rate limit (last day)",
        "debounced": "Enqueues merged into a debounced run (last day)",
        "batched": "Items collected into batch runs (last day)",
    }
    families = {
        name: GaugeMetricFamily(f"{PREFIX}_flow_{name}", text, labels=labels) for name, text in help_texts.items()
    }
    for row in rows:
        values = [row["function"], row["limit"], row["key"] or ""]
        for name, family in families.items():
            if row.get(name) is not None:
                family.add_metric(values, float(row[name]))
    return list(families.values())


async def _run_families(runtime: Runtime) -> list[Any]:
    """Unfinished runs per function and status, waiting (durable) ones included, from the store's counts."""
    from prometheus_client.core import GaugeMetricFamily

    try:
        counts = await asyncio.wait_for(runtime.store.counts(), SCRAPE_TIMEOUT)
    except Exception as exc:
        logger.warning("metrics: cannot read the run counts from the store: %s", exc)
        return []
    runs = GaugeMetricFamily(f"{PREFIX}_runs", "Unfinished runs, by function and status", labels=["function", "status"])
    for function, statuses in sorted(counts.items()):
        for status in ("scheduled", "queued", "running", "retrying", "waiting"):
            runs.add_metric([function, status], float(statuses.get(status, 0)))
    return [runs]


class _Families:
    """A collector of families gathered beforehand (asynchronously), for generate_latest."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


async def render(runtime: Runtime | None) -> tuple[bytes, str]:
    """This process's metrics, plus the queue depths of `runtime`'s app, as Prometheus text."""
    from prometheus_client import generate_latest

    body = generate_latest(metrics().registry)
    if runtime is not None:
        families = await _queue_families(runtime) + await _flow_families(runtime) + await _run_families(runtime)
        body += generate_latest(_Families(families))
    return body, CONTENT_TYPE


# --- HTTP ------------------------------------------------------------------------------------------


def route_template(scope: Scope, routes: list[BaseRoute]) -> str:
    """The route's path as declared (`/users/{id}`), never the requested path (unbounded label values)."""
    route = scope.get("route")
    if route is None:  # answered before routing (e.g. a missing token): find what it would have matched
        for candidate in routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class HttpCounts:
    """The process's HTTP series, counted by route template, method and status (`metrics().http_counts`). A request
    adds to plain numbers kept here (a bisect and three additions); they move into the prometheus series as the
    registry is collected (a scrape: this is a collector that yields nothing), so that a request does not pay
    prometheus_client's locks and label lookups (~2.5 us)."""

    def __init__(self) -> None:
        self.children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # by (route, method, status): [requests, seconds in all, requests per bucket of HTTP_BUCKETS and +Inf]
        self.pending: dict[tuple[str, str, int], list[Any]] = {}

    def add(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request: `method` as the client sent it (any other than the usual ones counts as other)."""
        key = (route, method if method in _METHODS else "other", status)
        pending = self.pending.get(key)
        if pending is None:
            pending = self.pending[key] = [0, 0.0, [0] * (len(HTTP_BUCKETS) + 1)]
        pending[0] += 1
        pending[1] += seconds
        pending[2][bisect.bisect_left(HTTP_BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds

    def collect(self) -> list[Any]:
        """Move the pending counts into the prometheus series (the registry collects them next)."""
        if not self.pending:  # also when the registry first asks, from within metrics()
            return []
        pending, self.pending = self.pending, {}
        for key, (requests, seconds, buckets) in pending.items():
            children = self.children.get(key)
            if children is None:
                route, method, status = key
                children = self.children[key] = (
                    metrics().http_requests.labels(route, method, str(status)),
                    metrics().http_duration.labels(route, method),
                )
            children[0].inc(requests)
            # prometheus_client has no bulk observe: its histogram's sum and buckets (the version is pinned)
            children[1]._sum.inc(seconds)
            for bucket, count in zip(children[1]._buckets, buckets, strict=True):
                if count:
                    bucket.inc(count)
        return []


class HttpMetrics:
    """ASGI middleware: counts requests by route template, method and status, and times them."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self.counts = metrics().http_counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        def count(status: int, seconds: float) -> None:
            self.counts.add(route_template(scope, self.routes), scope["method"], status, seconds)

        await observed(self.app, scope, receive, send, count)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def metrics_route(runtime: Runtime) -> BaseRoute:
    """`GET /metrics` for a Starlette app."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        body, content_type = await render(runtime)
        return Response(body, media_type=content_type)

    return Route("/metrics", endpoint, methods=["GET"])

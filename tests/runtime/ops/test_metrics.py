"""`GET /metrics` scraped from real `runtime web`, `worker`, `scheduler` and `dashboard` processes, and read
with prometheus_client's own parser: runs by function, queue and outcome (sync tasks, run in child processes,
included), their durations and start latencies, HTTP requests by route template and status, queue depths."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime import Runtime
from runtime.ops.metrics import render
from runtime.queue.broker import STARTED
from runtime.settings import Settings
from tests.conftest import free_port, wait_for_port, write_app

MODULE = f"metrics_app_{uuid.uuid4().hex[:8]}"

SOURCE = """
import asyncio, time
from runtime import http, task

@http
async def item(id: int) -> dict:
    return {"id": id}

@http
async def boom() -> dict:
    raise RuntimeError("boom")

@task
async def fast(n: int) -> int:
    await asyncio.sleep(0.01)
    return n

@task
async def flaky() -> None:
    raise ValueError("always")

@task
def crunch(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
"""

MANIFEST = f"""
app: metrics-test
functions:
  item: {{handler: "{MODULE}:item", http: {{path: "/items/{{id:int}}", methods: [GET]}}}}
  boom: {{handler: "{MODULE}:boom", http: {{path: /boom, methods: [GET]}}}}
  fast: {{handler: "{MODULE}:fast", task: {{retries: 0}}}}
  flaky: {{handler: "{MODULE}:flaky", task: {{retries: 1}}}}
  crunch: {{handler: "{MODULE}:crunch", task: {{retries: 0, timeout: 30s}}}}
"""

TOKEN = "metrics-token-0123456789abcdef"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("app"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path}/runs.db", "SHUTDOWN_TIMEOUT": "5"}


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    runtime = Runtime.from_manifest(app, Settings(redis_url=env["REDIS_URL"], database_url=env["DATABASE_URL"]))
    await runtime.start()
    yield runtime
    await runtime.stop()


def parse(text: str) -> Samples:
    """Every sample, keyed by (name, labels), read by prometheus_client's parser (it raises on bad text)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("firstsip_"), family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(port: int, **headers: str) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def queue_depths(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["state"]: v
        for (name, labels), v in samples.items()
        if name == "firstsip_queue_depth" and dict(labels)["queue"] == "default"
    }


def start(spawn: Any, app: Path, env: dict[str, str], *command: str, ready: str) -> int:
    port = free_port()
    extra = {"WORKER_HEALTH_PORT": str(port)} if command[0] in ("worker", "scheduler") else {}
    args = ["runtime", *command, "--manifest", str(app)]
    if command[0] in ("web", "dashboard"):
        args += ["--port", str(port)]
    process = spawn(args, app.parent, env | extra)
    process.wait_for(ready)
    wait_for_port(port)
    return port


def test_web_counts_requests_by_route_template_and_status(spawn, app, env):
    port = start(spawn, app, env, "web", ready="Uvicorn running")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for i in (1, 2, 3):
            assert client.get(f"/items/{i}").status_code == 200
        assert client.get("/items/abc").status_code == 404
        assert client.get("/nowhere").status_code == 404
        assert client.get("/boom").status_code == 500
        assert client.post("/items/1").status_code == 405
    samples = scrape(port)
    route = "/items/{id:int}"
    assert value(samples, "firstsip_http_requests_total", route=route, method="GET", status="200") == 3
    assert value(samples, "firstsip_http_requests_total", route=route, method="POST", status="405") == 1
    assert value(samples, "firstsip_http_requests_total", route="/boom", method="GET", status="500") == 1
    assert value(samples, "firstsip_http_requests_total", route="unmatched", method="GET", status="404") == 2
    # the requested paths never become label values (they are unbounded)
    assert not any(dict(labels).get("route", "").startswith("/items/1") for _, labels in samples)
    count = value(samples, "firstsip_http_request_duration_seconds_count", route=route, method="GET")
    assert count == 3
    buckets = {
        dict(labels)["le"]: v
        for (name, labels), v in samples.items()
        if name == "firstsip_http_request_duration_seconds_bucket"
        and dict(labels)["route"] == route
        and dict(labels)["method"] == "GET"
    }
    assert buckets["+Inf"] == 3 and len(buckets) > 5
    assert list(buckets.values()) == sorted(buckets.values())  # cumulative
    assert value(samples, "firstsip_queue_depth_up") == 1
    assert value(samples, "firstsip_process_resident_memory_bytes") > 0


async def test_worker_counts_runs_by_outcome_sync_ones_included(spawn, app, env, rt):
    port = start(spawn, app, env, "worker", ready="ready")
    fast = [await rt.app.tasks["fast"].enqueue(n=n) for n in range(3)]
    crunch = [await rt.app.tasks["crunch"].enqueue(seconds=0.2) for _ in range(2)]
    flaky = await rt.app.tasks["flaky"].enqueue()
    for run_id in [*fast, *crunch]:
        assert (await rt.wait(run_id, timeout=30)).status == "succeeded"
    assert (await rt.wait(flaky, timeout=30)).status == "failed"
    deadline = time.monotonic() + 10
    while True:  # the counter moves as the attempt finishes, just before the record is saved
        samples = scrape(port)
        if value(samples, "firstsip_runs_finished_total", function="flaky", queue="default", outcome="failed"):
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    def finished(function: str, outcome: str) -> float:
        return value(samples, "firstsip_runs_finished_total", function=function, queue="default", outcome=outcome)

    assert finished("fast", "succeeded") == 3
    assert finished("crunch", "succeeded") == 2  # ran in child processes, counted by the worker
    assert (finished("flaky", "retrying"), finished("flaky", "failed")) == (1, 1)
    assert finished("fast", "failed") == finished("crunch", "failed") == 0

    def histogram(name: str, function: str, part: str) -> float:
        return value(samples, f"firstsip_{name}_seconds_{part}", function=function, queue="default")

    assert histogram("run_duration", "crunch", "count") == 2
    assert histogram("run_duration", "crunch", "sum") >= 0.4
    assert histogram("run_duration", "flaky", "count") == 2  # both attempts
    # enqueue -> start: once per run (a retry's wait is its backoff)
    assert [histogram("run_start_latency", f, "count") for f in ("fast", "crunch", "flaky")] == [3, 2, 1]
    assert 0 < histogram("run_start_latency", "fast", "sum") < 30
    assert value(samples, "firstsip_dead_letters") == 1
    assert queue_depths(samples)["dead"] == 1


async def test_queue_depths_with_a_backlog_and_no_worker(spawn, app, env, rt):
    fast = rt.app.tasks["fast"]
    await fast.enqueue_many([{"n": n} for n in range(5)])
    await fast.with_options(delay=600).enqueue_many([{"n": n} for n in range(2)])
    retry = rt.message("flaky", "retry-1", {}, attempt=2)
    await rt.broker.kick_many([retry], delay=600)
    await rt.broker.ensure_groups()
    taken = await rt.broker.read(["default"], 2, block_ms=None)  # read by a worker, not started: waiting
    assert len(taken) == 2
    assert await rt.broker.mark_started(taken[0], "run-1", b"{}") == STARTED  # started: running
    await rt.broker.redis.zadd(rt.keys.dead, {"dead-1": time.time()})

    port = start(spawn, app, env, "web", ready="Uvicorn running")
    samples = scrape(port)
    assert queue_depths(samples) == {"waiting": 4, "running": 1, "scheduled": 2, "retrying": 1, "dead": 1}
    assert value(samples, "firstsip_dead_letters") == 1


async def test_queue_depths_before_any_worker_created_the_group(rt):
    await rt.app.tasks["fast"].enqueue(n=1)
    samples = parse((await render(rt))[0].decode())
    assert queue_depths(samples) == {"waiting": 1, "running": 0, "scheduled": 0, "retrying": 0, "dead": 0}


async def test_queue_depths_are_reported_unknown_when_redis_is_away(app, tmp_path):
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", database_url=f"sqlite:///{tmp_path}/r.db")
    runtime = Runtime.from_manifest(app, settings)
    started = time.monotonic()
    samples = parse((await render(runtime))[0].decode())
    assert time.monotonic() - started < 5
    assert value(samples, "firstsip_queue_depth_up") == 0
    assert not queue_depths(samples)


async def test_scheduler_serves_metrics_on_its_health_port(spawn, app, env, rt):
    await rt.app.tasks["fast"].enqueue(n=1)
    port = start(spawn, app, env, "scheduler", ready="scheduler ready")
    samples = scrape(port)
    assert queue_depths(samples)["waiting"] == 1
    assert value(samples, "firstsip_process_cpu_seconds_total") > 0


def test_dashboard_metrics_need_its_token(spawn, app, env):
    port = start(spawn, app, env | {"DASHBOARD_TOKEN": TOKEN}, "dashboard", ready="Uvicorn running")
    refused = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert refused.status_code == 401
    assert httpx.get(f"http://127.0.0.1:{port}/api/runs").status_code == 401
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    samples = scrape(port, authorization=f"Bearer {TOKEN}")
    assert value(samples, "firstsip_http_requests_total", route="/metrics", method="GET", status="401") == 1
    assert value(samples, "firstsip_http_requests_total", route="/api/runs", method="GET", status="401") == 1
    assert value(samples, "firstsip_http_requests_total", route="/health", method="GET", status="200") == 1
    assert value(samples, "firstsip_queue_depth_up") == 1


def test_a_scrape_is_valid_prometheus_text_with_help_and_type(spawn, app, env):
    port = start(spawn, app, env, "web", ready="Uvicorn running")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["firstsip_runs_finished"] == "counter"
    assert families["firstsip_run_duration_seconds"] == "histogram"
    assert families["firstsip_run_start_latency_seconds"] == "histogram"
    assert families["firstsip_http_requests"] == "counter"
    assert families["firstsip_http_request_duration_seconds"] == "histogram"
    assert families["firstsip_queue_depth"] == "gauge"
    assert families["firstsip_dead_letters"] == "gauge"
    assert orjson.dumps(sorted(families))  # every name parsed

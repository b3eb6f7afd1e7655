"""The data behind the dashboard's new views, through its real app (in-process ASGI) on a real Redis and
database: live workers (runtime/ops/presence.py), throughput per minute, cron schedules, the invoke console
(emulator only), the page's assets, and the read-only dashboard of a broken emulator generation."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from runtime.app.connections import Runtime
from runtime.dashboard.app import create_dashboard_app
from runtime.dashboard.broken import create_broken_dashboard_app
from runtime.ops import presence
from runtime.settings import Settings
from runtime.store.models import Run
from runtime.store.runs import RunStore
from runtime.store.values import utcnow
from runtime.web.app import create_web_app
from tests.conftest import write_app

MANIFEST = """
app: data-test
functions:
  ping:
    handler: MODULE:ping
    http: {path: "/ping/{n:int}", methods: [POST]}
  work:
    handler: MODULE:work
    task: {}
  nightly:
    handler: MODULE:nightly
    task: {schedule: "30 5 * * *"}
"""
MODULE = """
from runtime import http, task


@http
async def ping(request, n: int):
    return {"n": n, "body": await request.json()}


@task
async def work(x: int) -> int:
    return x


@task
async def nightly() -> None:
    return None
"""


@pytest.fixture
async def runtime(tmp_path: Path, redis_url: str, database_url: str) -> AsyncIterator[Runtime]:
    module = f"data_{uuid.uuid4().hex[:12]}"
    manifest = write_app(tmp_path / "app", MANIFEST.replace("MODULE", module), {f"{module}.py": MODULE})
    async with Runtime.from_manifest(manifest, Settings(redis_url=redis_url, database_url=database_url)) as rt:
        yield rt


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard")  # type: ignore[arg-type]


def finished(run_id: str, status: str, at: datetime) -> Run:
    return Run(
        id=run_id, function="work", arguments={"x": 1}, status=status, enqueued_at=at, started_at=at, finished_at=at
    )


async def test_workers_publish_and_expire(runtime: Runtime) -> None:
    now = time.time()
    counts = SimpleNamespace(done_count=7, failed_count=2)
    alive = presence.info("w-alive", ["default"], now - 60, 4, ["run-a", "run-b"], counts)
    await presence.publish(runtime, alive)
    gone = presence.info("w-gone", ["default"], now - 600, 1, [], counts)
    await presence.publish(runtime, {**gone, "heartbeat": now - 31})
    async with client(create_dashboard_app(runtime)) as http:
        response = await http.get("/api/workers")
    assert response.status_code == 200
    [worker] = response.json()
    assert worker["name"] == "w-alive" and worker["running"] == 2 and worker["queues"] == ["default"]
    assert worker["running_runs"] == ["run-a", "run-b"] and worker["concurrency"] == 4
    assert (worker["processed"], worker["failed"]) == (7, 2)
    assert worker["host"] and worker["pid"] > 0
    assert datetime.fromisoformat(worker["started"]).timestamp() == pytest.approx(now - 60)
    # the stale entry was dropped from the hash too
    assert await runtime.broker.redis.hkeys(runtime.keys.workers()) == [b"w-alive"]


async def test_throughput_counts_finished_runs_per_minute(runtime: Runtime) -> None:
    now = utcnow().replace(second=30, microsecond=0)
    await runtime.store.insert_many(
        [
            finished("a1", "succeeded", now),
            finished("a2", "succeeded", now),
            finished("a3", "failed", now),
            finished("s1", "skipped", now),  # a rate limit's: finished without running
            finished("b1", "failed", now - timedelta(minutes=5)),
            finished("old", "succeeded", now - timedelta(minutes=61)),  # more than an hour ago: left out
        ]
    )
    minutes = await runtime.store.throughput(60, now=now)
    assert len(minutes) == 60
    assert minutes[-1] == {
        "minute": now.replace(second=0).isoformat(timespec="microseconds") + "+00:00",
        "succeeded": 2,
        "failed": 1,
        "cancelled": 0,
        "skipped": 1,
    }
    assert minutes[-6]["failed"] == 1 and minutes[-6]["succeeded"] == 0
    assert sum(m["succeeded"] + m["failed"] for m in minutes) == 4
    async with client(create_dashboard_app(runtime)) as http:
        answer = (await http.get("/api/throughput")).json()
    assert len(answer) == 60 and sum(m["succeeded"] for m in answer) == 2


async def test_throughput_counts_a_run_cancelled_in_the_last_hour(runtime: Runtime) -> None:
    """A cancelled run has a finished_at too: /api/throughput answered 500 (KeyError) for an hour after
    any cancel, and the dashboard's chart went blank."""
    now = utcnow()
    await runtime.store.insert_many([finished("c1", "cancelled", now), finished("s1", "succeeded", now)])
    async with client(create_dashboard_app(runtime)) as http:
        response = await http.get("/api/throughput")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert sum(m["cancelled"] for m in answer) == 1 and sum(m["succeeded"] for m in answer) == 1


async def test_schedules_have_next_fire_and_last_run(runtime: Runtime) -> None:
    async with client(create_dashboard_app(runtime)) as http:
        [before] = (await http.get("/api/schedules")).json()
        assert before["name"] == "nightly" and before["last_run"] is None
        fire = datetime.fromisoformat(before["next_fire"]).replace(tzinfo=None)
        assert (fire.hour, fire.minute) == (5, 30) and utcnow() < fire <= utcnow() + timedelta(days=1)
        run = (await http.post("/api/functions/nightly/runs", json={})).json()
        [after] = (await http.get("/api/schedules")).json()
    assert after["last_run"]["id"] == run["id"]


async def test_invoke_calls_the_web_app_only_when_given(runtime: Runtime) -> None:
    async with client(create_dashboard_app(runtime)) as http:
        refused = await http.post("/api/invoke", json={"method": "POST", "path": "/ping/3", "body": "{}"})
    assert refused.status_code == 404 and "only in the emulator" in refused.json()["error"]
    dashboard = create_dashboard_app(runtime, web_app=create_web_app(runtime))
    async with client(dashboard) as http:
        answer = await http.post("/api/invoke", json={"method": "POST", "path": "/ping/3", "body": '{"a": 1}'})
        missing = await http.post("/api/invoke", json={"method": "GET", "path": "/nope"})
        bad = await http.post("/api/invoke", json={"path": "no-slash"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == 200
    assert httpx.Response(200, content=answer.json()["body"]).json() == {"n": 3, "body": {"a": 1}}
    assert missing.json()["status"] == 404
    assert bad.status_code == 422


async def test_assets_are_served_without_the_token(runtime: Runtime) -> None:
    app = create_dashboard_app(runtime, token="a-token-of-sixteen-chars")
    async with client(app) as http:
        script = await http.get("/assets/dashboard-main.js")
        style = await http.get("/assets/dashboard.css")
        outside = await http.get("/assets/..%2Fdashboard.py")
        other = await http.get("/assets/docs")
        data = await http.get("/api/workers")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "import" in script.text
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert outside.status_code == 404 and other.status_code == 404
    assert data.status_code == 401


async def test_broken_generation_keeps_a_read_only_dashboard(tmp_path: Path, sqlite_url: str) -> None:
    store = RunStore(Settings(database_url=sqlite_url).database_url)
    await store.init()
    try:
        await store.insert_many([finished("r1", "failed", utcnow())])
        app = create_broken_dashboard_app(store, "SyntaxError: invalid syntax (app.py, line 3)")
        async with client(app) as http:
            page = await http.get("/")
            runs = await http.get("/api/runs")
            one = await http.get("/api/runs/r1")
            stats = await http.get("/api/stats")
            write = await http.post("/api/functions/work/runs", json={})
    finally:
        await store.close()
    assert page.status_code == 200 and "dashboard-main.js" in page.text
    assert [run["id"] for run in runs.json()] == ["r1"] and one.json()["status"] == "failed"
    assert stats.status_code == 503 and "line 3" in stats.json()["detail"]
    assert write.status_code == 503

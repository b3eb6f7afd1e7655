"""The dashboard's JSON API, in process (httpx's ASGITransport) on a real Redis and SQLite; the failed
runs come from a real `runtime worker` subprocess."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime import Runtime
from runtime.dashboard.app import create_dashboard_app
from runtime.errors import ConfigError
from runtime.settings import Settings
from runtime.store.values import STATUSES
from tests.conftest import Process, write_app

MODULE = """
from runtime import http, task


@http
async def hello(request):
    return {"hello": "world"}


@task
async def add(a: int, b: int) -> int:
    return a + b


@task
async def nightly() -> str:
    return "done"


@task
async def boom(n: int = 0) -> None:
    raise RuntimeError(f"boom number {n} always fails")
"""

MANIFEST = """
app: dash-test
defaults: {retries: 2, timeout: 30s, concurrency: 3}
functions:
  hello:
    handler: {module}:hello
    http: {path: /hello, methods: [GET, POST]}
  add:
    handler: {module}:add
    task: {timeout: 10s}
  boom:
    handler: {module}:boom
    task: {retries: 0}
  nightly:
    handler: {module}:nightly
    task: {schedule: "0 3 * * *"}
"""


@dataclass
class Dashboard:
    runtime: Runtime
    client: httpx.AsyncClient
    manifest: Path
    env: dict[str, str]

    def start_worker(self, spawn: Callable[..., Process]) -> Process:
        args = ["runtime", "worker", "--manifest", str(self.manifest)]
        worker = spawn(args, cwd=self.manifest.parent, env=self.env)
        worker.wait_for("ready", timeout=30)
        return worker

    async def enqueue(self, function: str, **arguments: Any) -> str:
        [run_id] = await self.runtime.enqueue(self.runtime.app.tasks[function], [arguments])
        return run_id


def make_app(tmp_path: Path) -> Path:
    module = f"dash_{uuid.uuid4().hex[:12]}"
    return write_app(tmp_path / "app", MANIFEST.replace("{module}", module), {f"{module}.py": MODULE})


async def open_dashboard(
    tmp_path: Path, redis_url: str, sqlite_url: str, token: str | None
) -> AsyncIterator[Dashboard]:
    manifest = make_app(tmp_path)
    runtime = Runtime.from_manifest(manifest, Settings(redis_url=redis_url, database_url=sqlite_url))
    await runtime.start()
    app = create_dashboard_app(runtime, token)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_url, "WORKER_HEALTH_PORT": "0"}
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
            yield Dashboard(runtime, client, manifest, env)
    finally:
        await runtime.stop()


@pytest.fixture
async def dash(tmp_path: Path, redis_url: str, sqlite_url: str) -> AsyncIterator[Dashboard]:
    async for dashboard in open_dashboard(tmp_path, redis_url, sqlite_url, None):
        yield dashboard


@pytest.fixture
async def locked(tmp_path: Path, redis_url: str, sqlite_url: str) -> AsyncIterator[Dashboard]:
    async for dashboard in open_dashboard(tmp_path, redis_url, sqlite_url, "s3cret-dashboard-token"):
        yield dashboard


async def failed_run(dash: Dashboard, spawn: Callable[..., Process], n: int = 1) -> str:
    """A run of `boom` that failed for real in a worker subprocess."""
    dash.start_worker(spawn)
    run_id = await dash.enqueue("boom", n=n)
    run = await dash.runtime.wait(run_id, timeout=30)
    assert run.status == "failed", run
    return run_id


# --- the page -------------------------------------------------------------------------------------


async def test_page_is_served(dash: Dashboard) -> None:
    response = await dash.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for testid in (
        "stats",
        "functions-table",
        "runs-table",
        "run-detail",
        "dead-letters",
        "status-filter",
        "function-filter",
        "enqueue-form",
    ):
        assert f'data-testid="{testid}"' in response.text
    assert "http://" not in response.text and "https://" not in response.text  # nothing from a CDN


# --- GET /api/runs ----------------------------------------------------------------------------------


async def test_list_runs_newest_first_with_filters_and_limit(dash: Dashboard) -> None:
    ids = [await dash.enqueue("add", a=i, b=1) for i in range(3)]
    boom_id = await dash.enqueue("boom", n=1)

    response = await dash.client.get("/api/runs")
    assert response.status_code == 200
    runs = response.json()
    assert [r["id"] for r in runs] == [boom_id, *reversed(ids)]
    first = runs[0]
    assert next(iter(first)) == "id"
    assert {
        "function",
        "arguments",
        "status",
        "attempts",
        "max_attempts",
        "last_error",
        "enqueued_at",
        "scheduled_for",
        "started_at",
        "finished_at",
        "result",
        "history",
        "replay_of",
    } <= set(first)
    assert first["function"] == "boom" and first["arguments"] == {"n": 1} and first["status"] == "queued"
    assert first["max_attempts"] == 1 and first["enqueued_at"].endswith("+00:00")

    adds = (await dash.client.get("/api/runs", params={"function": "add"})).json()
    assert [r["id"] for r in adds] == list(reversed(ids))
    assert (await dash.client.get("/api/runs", params={"function": "add", "status": "queued"})).json() == adds
    assert (await dash.client.get("/api/runs", params={"status": "failed"})).json() == []
    assert (await dash.client.get("/api/runs", params={"function": "nope"})).json() == []

    limited = (await dash.client.get("/api/runs", params={"limit": 2})).json()
    assert [r["id"] for r in limited] == [boom_id, ids[2]]
    page2 = (await dash.client.get("/api/runs", params={"limit": 2, "offset": 2})).json()
    assert [r["id"] for r in page2] == [ids[1], ids[0]]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"status": "exploded"}, "unknown status"),
        ({"limit": "many"}, "limit"),
        ({"offset": "x"}, "offset"),
    ],
)
async def test_list_runs_rejects_bad_parameters(dash: Dashboard, params: dict[str, str], words: str) -> None:
    response = await dash.client.get("/api/runs", params=params)
    assert response.status_code == 400
    assert words in response.json()["error"]


# --- GET /api/runs/{id} -----------------------------------------------------------------------------


async def test_get_one_run_and_404(dash: Dashboard) -> None:
    run_id = await dash.enqueue("add", a=2, b=3)
    response = await dash.client.get(f"/api/runs/{run_id}")
    assert response.status_code == 200
    assert response.json()["id"] == run_id and response.json()["arguments"] == {"a": 2, "b": 3}

    missing = await dash.client.get("/api/runs/0123456789abcdef")
    assert missing.status_code == 404
    assert "0123456789abcdef" in missing.json()["error"]


async def test_a_failed_run_shows_attempts_and_error(dash: Dashboard, spawn: Callable[..., Process]) -> None:
    run_id = await failed_run(dash, spawn, n=7)
    run = (await dash.client.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "failed" and run["attempts"] == 1 and run["max_attempts"] == 1
    assert "boom number 7 always fails" in run["last_error"]
    [attempt] = run["history"]
    assert attempt["attempt"] == 1 and "boom number 7" in attempt["error"]
    assert attempt["duration_ms"] >= 0 and attempt["started_at"] == run["started_at"]
    assert run["started_at"] and run["finished_at"]


# --- replay, dead letters, delete -------------------------------------------------------------------


async def test_replay_a_failed_run(dash: Dashboard, spawn: Callable[..., Process]) -> None:
    run_id = await failed_run(dash, spawn)
    dead = (await dash.client.get("/api/dead-letters")).json()
    assert [r["id"] for r in dead] == [run_id]
    assert dead[0]["status"] == "failed" and "always fails" in dead[0]["last_error"]

    response = await dash.client.post(f"/api/runs/{run_id}/replay")
    assert response.status_code == 201
    new = response.json()
    assert new["id"] != run_id and new["replay_of"] == run_id
    assert new["function"] == "boom" and new["arguments"] == {"n": 1} and new["status"] == "queued"
    # the old run left the dead letters (the worker may already have failed the new one into them)
    assert run_id not in [r["id"] for r in (await dash.client.get("/api/dead-letters")).json()]

    # the new run really runs (and fails again, back into the dead letters)
    again = await dash.runtime.wait(new["id"], timeout=30)
    assert again.status == "failed"
    assert [r["id"] for r in (await dash.client.get("/api/dead-letters")).json()] == [new["id"]]


async def test_replay_of_a_run_that_has_not_failed_is_409(dash: Dashboard) -> None:
    run_id = await dash.enqueue("add", a=1, b=1)
    response = await dash.client.post(f"/api/runs/{run_id}/replay")
    assert response.status_code == 409
    assert "queued" in response.json()["error"]
    assert (await dash.client.post("/api/runs/0123456789abcdef/replay")).status_code == 404


async def test_delete_a_run(dash: Dashboard, spawn: Callable[..., Process]) -> None:
    run_id = await failed_run(dash, spawn)
    response = await dash.client.delete(f"/api/runs/{run_id}")
    assert response.status_code == 204
    assert (await dash.client.get(f"/api/runs/{run_id}")).status_code == 404
    assert (await dash.client.get("/api/dead-letters")).json() == []
    assert (await dash.client.delete(f"/api/runs/{run_id}")).status_code == 404


async def test_dead_letters_limit(dash: Dashboard, spawn: Callable[..., Process]) -> None:
    dash.start_worker(spawn)
    ids = [await dash.enqueue("boom", n=i) for i in range(3)]
    for run_id in ids:
        await dash.runtime.wait(run_id, timeout=30)
    assert len((await dash.client.get("/api/dead-letters")).json()) == 3
    assert len((await dash.client.get("/api/dead-letters", params={"limit": 2})).json()) == 2
    assert (await dash.client.get("/api/dead-letters", params={"limit": "x"})).status_code == 400


# --- POST /api/functions/{name}/runs ----------------------------------------------------------------


async def test_enqueue_through_the_api(dash: Dashboard, spawn: Callable[..., Process]) -> None:
    response = await dash.client.post("/api/functions/add/runs", json={"a": 2, "b": "40"})
    assert response.status_code == 202
    run = response.json()
    assert run["function"] == "add" and run["status"] == "queued" and run["arguments"] == {"a": 2, "b": 40}
    assert (await dash.client.get(f"/api/runs/{run['id']}")).json()["id"] == run["id"]

    dash.start_worker(spawn)
    done = await dash.runtime.wait(run["id"], timeout=30)
    assert done.status == "succeeded" and done.result == 42
    shown = (await dash.client.get(f"/api/runs/{run['id']}")).json()
    assert shown["result"] == 42 and shown["history"][0]["error"] is None


async def test_enqueue_with_a_delay_is_scheduled(dash: Dashboard) -> None:
    response = await dash.client.post("/api/functions/add/runs", params={"delay": 60}, json={"a": 1, "b": 2})
    assert response.status_code == 202
    assert response.json()["status"] == "scheduled" and response.json()["scheduled_for"]
    stats = (await dash.client.get("/api/stats")).json()
    assert stats["queue"]["scheduled"] == 1


async def test_enqueue_errors(dash: Dashboard) -> None:
    bad_json = await dash.client.post(
        "/api/functions/add/runs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]

    bad_args = await dash.client.post("/api/functions/add/runs", json={"a": "one"})
    assert bad_args.status_code == 422
    assert "a" in bad_args.json()["error"] and "b" in bad_args.json()["error"]

    not_object = await dash.client.post("/api/functions/add/runs", json=[1, 2])
    assert not_object.status_code == 422

    unknown = await dash.client.post("/api/functions/nope/runs", json={})
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]

    http_function = await dash.client.post("/api/functions/hello/runs", json={})
    assert http_function.status_code == 404

    assert (await dash.client.get("/api/runs")).json() == []  # nothing was recorded


# --- GET /api/functions, /api/stats -----------------------------------------------------------------


async def test_functions(dash: Dashboard) -> None:
    response = await dash.client.get("/api/functions")
    assert response.status_code == 200
    functions = {f["name"]: f for f in response.json()}
    assert list(functions) == ["hello", "add", "boom", "nightly"]
    hello = functions["hello"]
    assert hello["kind"] == "http" and hello["route"] == "/hello" and hello["methods"] == ["GET", "POST"]
    add = functions["add"]
    assert add["kind"] == "task" and add["retries"] == 2 and add["timeout"] == "10s"
    assert add["timeout_seconds"] == 10 and add["concurrency"] == 3 and add["schedule"] is None
    assert functions["boom"]["retries"] == 0 and functions["boom"]["timeout"] == "30s"
    assert functions["nightly"]["schedule"] == "0 3 * * *"
    assert hello["handler"].endswith(":hello") and functions["nightly"]["handler"].endswith(":nightly")
    # a task's arguments as a JSON schema, from its type hints: what the "Run a task" form starts from
    assert "arguments" not in hello
    assert add["arguments"]["required"] == ["a", "b"]
    assert add["arguments"]["properties"]["a"]["type"] == "integer"
    assert functions["boom"]["arguments"]["properties"]["n"]["default"] == 0
    assert "required" not in functions["boom"]["arguments"] and functions["nightly"]["arguments"]["properties"] == {}


async def test_app_name_for_every_view_and_the_favicon(locked: Dashboard) -> None:
    assert (await locked.client.get("/api/app")).status_code == 401
    answer = await locked.client.get("/api/app", headers={"authorization": "Bearer s3cret-dashboard-token"})
    assert answer.json() == {"app": "dash-test"}
    icon = await locked.client.get("/favicon.ico")  # browsers ask for it without the token: it holds no data
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")


async def test_stats(dash: Dashboard, spawn: Callable[..., Process]) -> None:
    empty = (await dash.client.get("/api/stats")).json()
    idle = {"waiting": 0, "running": 0, "scheduled": 0, "retrying": 0, "dead": 0}
    assert empty == {
        "app": "dash-test",
        "queue": idle,
        "queues": {"default": idle | {"paused": False}},  # as GET /api/queues, without its last hour
        "statuses": dict.fromkeys(STATUSES, 0),
        "runs": {},
        "runs_age_seconds": 0.0,  # counted for this call (a big store answers its last count, with its age)
        "workers_running": [],
        "dead_letter_alert": {"threshold": None, "count": 0, "over": False},
    }

    await dash.enqueue("add", a=1, b=2)
    await dash.enqueue("add", a=3, b=4)
    stats = (await dash.client.get("/api/stats")).json()
    assert stats["queue"] == idle | {"waiting": 2}
    assert stats["runs"] == {"add": {"queued": 2}}
    assert stats["statuses"] == dict.fromkeys(STATUSES, 0) | {"queued": 2}

    run_id = await failed_run(dash, spawn)
    await dash.runtime.wait(run_id)
    stats = (await dash.client.get("/api/stats")).json()
    assert stats["queue"]["dead"] == 1
    assert stats["runs"]["boom"] == {"failed": 1}
    assert set(stats["runs"]["add"]) <= set(STATUSES)
    assert stats["workers_running"] == []  # only workers executing a task are listed
    queues = (await dash.client.get("/api/queues")).json()
    assert {name: row | stats["queues"][name] for name, row in queues.items()} == queues


async def test_cancelled_runs_are_counted_overall_per_function_and_per_queue(dash: Dashboard) -> None:
    add = dash.runtime.app.tasks["add"]
    [run_id] = await dash.runtime.enqueue(add, [{"a": 1, "b": 1}], delay=60)
    await dash.runtime.enqueue(add, [{"a": 2, "b": 2}], delay=60)
    assert (await dash.client.post(f"/api/runs/{run_id}/cancel")).status_code == 200
    stats = (await dash.client.get("/api/stats")).json()
    assert stats["statuses"] == dict.fromkeys(STATUSES, 0) | {"scheduled": 1, "cancelled": 1}
    assert stats["runs"] == {"add": {"scheduled": 1, "cancelled": 1}}
    queues = (await dash.client.get("/api/queues")).json()
    assert queues["default"]["cancelled_last_hour"] == 1


# --- DASHBOARD_TOKEN ----------------------------------------------------------------------------------


async def test_token_is_required(locked: Dashboard) -> None:
    for path in ("/api/runs", "/api/stats", "/api/functions", "/api/dead-letters"):
        response = await locked.client.get(path)
        assert response.status_code == 401, path
        assert "DASHBOARD_TOKEN" in response.json()["error"]
    assert (await locked.client.post("/api/functions/add/runs", json={"a": 1, "b": 2})).status_code == 401
    wrong = await locked.client.get("/api/runs", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401

    ok = await locked.client.get("/api/runs", headers={"authorization": "Bearer s3cret-dashboard-token"})
    assert ok.status_code == 200 and ok.json() == []
    assert "set-cookie" not in ok.headers

    # the page itself holds no data: it loads, then asks for the token when the API answers 401
    page = await locked.client.get("/")
    assert page.status_code == 200 and 'data-testid="token-prompt"' in page.text
    assert (await locked.client.get("/health/live")).status_code == 200


async def test_token_query_parameter_sets_a_cookie(locked: Dashboard) -> None:
    response = await locked.client.get("/", params={"token": "s3cret-dashboard-token"})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("dashboard_token=s3cret-dashboard-token") and "HttpOnly" in cookie
    # the client keeps the cookie: the API now answers without a header or a query parameter
    assert (await locked.client.get("/api/stats")).status_code == 200

    locked.client.cookies.clear()
    assert (await locked.client.get("/api/stats")).status_code == 401
    assert (await locked.client.get("/api/stats", params={"token": "wrong"})).status_code == 401


TOKEN = "s3cret-dashboard-token"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "BeArEr"])
async def test_bearer_scheme_is_case_insensitive(locked: Dashboard, scheme: str) -> None:
    response = await locked.client.get("/api/runs", headers={"authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200


@pytest.mark.parametrize("header", [TOKEN, f"Basic {TOKEN}", f"Token {TOKEN}", f"Bearer{TOKEN}"])
async def test_a_token_without_the_bearer_scheme_is_refused(locked: Dashboard, header: str) -> None:
    response = await locked.client.get("/api/runs", headers={"authorization": header})
    assert response.status_code == 401


@pytest.mark.parametrize("token", ["short", "fifteen-chars-x"])
async def test_a_short_token_is_refused(tmp_path: Path, redis_url: str, sqlite_url: str, token: str) -> None:
    with pytest.raises(ConfigError, match=r"DASHBOARD_TOKEN is too short .*at least 16"):
        async for _ in open_dashboard(tmp_path, redis_url, sqlite_url, token):
            pass


async def test_writes_with_a_body_must_be_json(locked: Dashboard) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = auth | ({"content-type": content_type} if content_type else {})
        response = await locked.client.post("/api/functions/add/runs", content=b'{"a": 1, "b": 2}', headers=headers)
        assert response.status_code == 403, content_type
        assert "application/json" in response.json()["error"]
    assert await locked.runtime.store.list() == []
    response = await locked.client.post(
        "/api/functions/add/runs", content=b'{"a": 1, "b": 2}', headers=auth | {"content-type": "application/json"}
    )
    assert response.status_code == 202


async def test_the_page_cannot_be_framed_by_another_site(dash: Dashboard) -> None:
    page = await dash.client.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["content-security-policy"] == "frame-ancestors 'none'"


# --- the operations (runtime/ops/operations.py): search, bulk replay / delete, queues, pause ---------------------


def _failed(run_id: str, function: str = "boom") -> dict[str, Any]:
    from runtime.store.values import utcnow

    now = utcnow()
    return {
        "id": run_id,
        "function": function,
        "arguments": {"n": 3},
        "status": "failed",
        "attempts": 1,
        "max_attempts": 1,
        "last_error": "RuntimeError: boom",
        "enqueued_at": now,
        "finished_at": now,
        "history": [],
        "version": 12,
    }


async def _dead(dash: Dashboard, *ids: str) -> None:
    await dash.runtime.store.insert_many([_failed(i) for i in ids])
    await dash.runtime.broker.redis.zadd(dash.runtime.keys.dead, dict.fromkeys(ids, 1.0))


async def test_list_runs_searches_ids_and_arguments_and_filters_by_queue(dash: Dashboard) -> None:
    first = await dash.enqueue("add", a=123456, b=1)
    second = await dash.enqueue("add", a=7, b=8)
    found = (await dash.client.get("/api/runs", params={"search": "123456"})).json()
    assert [r["id"] for r in found] == [first]
    for start_or_end in (second[:16], second[-8:]):  # runs of one moment share their first digits
        found = (await dash.client.get("/api/runs", params={"search": start_or_end})).json()
        assert [r["id"] for r in found] == [second]
    assert len((await dash.client.get("/api/runs", params={"queue": "default"})).json()) == 2
    assert (await dash.client.get("/api/runs", params={"queue": "other"})).json() == []


async def test_bulk_replay_and_delete_by_filter_and_by_ids(dash: Dashboard) -> None:
    await _dead(dash, "a" * 32, "b" * 32, "c" * 32)
    response = await dash.client.post("/api/runs/replay", json={"status": "failed", "function": "boom", "since": 60})
    assert response.status_code == 200
    answer = response.json()
    assert answer["count"] == 3 and len(answer["ids"]) == 3 and answer["errors"] == {}
    again = (await dash.client.post("/api/runs/replay", json={"status": "failed"})).json()
    assert again["count"] == 0  # they left the dead-letter list
    by_id = (await dash.client.post("/api/runs/replay", json={"ids": ["a" * 32, "nope"]})).json()
    assert by_id["count"] == 1 and "nope" in by_id["errors"]

    deleted = await dash.client.post("/api/runs/delete", json={"ids": ["b" * 32]})
    assert deleted.json() == {"count": 1, "errors": {}}
    assert (await dash.client.post("/api/runs/delete", json={"function": "boom"})).json()["count"] == 2
    assert (await dash.client.get(f"/api/runs/{'c' * 32}")).status_code == 404
    for body, words in (({}, "ids"), ({"since": "soon"}, "since"), ({"colour": 1}, "unknown filter")):
        refused = await dash.client.post("/api/runs/replay", json=body)
        assert refused.status_code == 422 and words in refused.json()["error"], refused.text


async def test_queues_pause_resume_and_dead_letter_alert_in_stats(dash: Dashboard) -> None:
    await dash.enqueue("add", a=1, b=1)
    queues = (await dash.client.get("/api/queues")).json()
    assert queues["default"]["waiting"] == 1 and queues["default"]["paused"] is False
    assert queues["default"]["weight"] == 1 and 0 <= queues["default"]["oldest_waiting_seconds"] < 30
    assert (await dash.client.post("/api/queues/default/pause")).json() == {"queue": "default", "paused": True}
    assert (await dash.client.get("/api/queues")).json()["default"]["paused"] is True
    assert (await dash.client.post("/api/queues/default/resume")).json()["paused"] is False
    missing = await dash.client.post("/api/queues/nope/pause")
    assert missing.status_code == 404 and "default" in missing.json()["error"]
    stats = (await dash.client.get("/api/stats")).json()
    assert stats["dead_letter_alert"] == {"threshold": None, "count": 0, "over": False}


async def test_cancel_endpoint(dash: Dashboard) -> None:
    [run_id] = await dash.runtime.enqueue(dash.runtime.app.tasks["add"], [{"a": 1, "b": 1}], delay=60)
    response = await dash.client.post(f"/api/runs/{run_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert (await dash.client.post("/api/runs/nope/cancel")).status_code == 404

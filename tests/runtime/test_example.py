"""The example app as a new user runs it: `runtime web`, `runtime worker` and `runtime scheduler` as
separate processes on one Redis, curled; on SQLite and on Postgres."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, RedisServer, free_port, wait_for_port


def curl(*args: str) -> tuple[int, Any]:
    result = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30)
    body, _, status = result.stdout.rpartition("\n")
    try:
        return int(status), json.loads(body)
    except ValueError:
        return int(status), body


def poll(url: str, until: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        _, briefing = curl(url)
        if briefing.get("status") == until or time.monotonic() > deadline:
            return briefing
        time.sleep(0.1)


@pytest.fixture
def stack(spawn, redis_url, database_url):  # type: ignore[no-untyped-def]
    def start(**env: str) -> str:
        port = free_port()
        common = {
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "BRIEFING_SOURCE_LATENCY": "0.3",
            "WORKER_HEALTH_PORT": "0",
        } | env
        # the three start together (each spends ~1.4 s importing), then each is waited for
        spawn(["runtime", "web", "--host", "127.0.0.1", "--port", str(port)], ROOT, common)
        worker = spawn(["runtime", "worker"], ROOT, common)
        scheduler = spawn(["runtime", "scheduler"], ROOT, common)
        worker.wait_for("ready")
        scheduler.wait_for("scheduler ready")
        wait_for_port(port)
        return f"http://127.0.0.1:{port}"

    return start


def test_briefing_flow_reaches_completed(stack):
    base = stack()
    status, created = curl(
        "-X", "POST", f"{base}/briefings", "-H", "content-type: application/json", "-d", '{"topic": "coffee"}'
    )
    assert status == 202
    assert created == {"id": created["id"], "status": "queued", "topic": "coffee"}
    briefing = poll(f"{base}/briefings/{created['id']}", "completed")
    assert briefing["status"] == "completed" and briefing["error"] is None
    assert "Your briefing on coffee" in briefing["content"]


def test_briefing_without_body_uses_the_default_topic(stack):
    base = stack()
    status, created = curl("-X", "POST", f"{base}/briefings")
    assert status == 202 and created["topic"] == "general"


def test_briefing_fails_with_the_error_after_four_attempts_when_the_source_is_down(stack):
    base = stack(BRIEFING_SOURCE_URL=f"http://127.0.0.1:{free_port()}/")
    _, created = curl("-X", "POST", f"{base}/briefings", "-d", '{"topic": "outage"}')
    briefing = poll(f"{base}/briefings/{created['id']}", "failed", timeout=40)
    assert briefing["status"] == "failed"
    assert briefing["error"] == "ConnectError: All connection attempts failed"


def test_get_briefing_answers_404_for_an_unknown_id(stack):
    base = stack()
    assert curl(f"{base}/briefings/424242") == (404, {"error": "no briefing with id 424242"})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bad_bodies_get_400_and_422_as_json_never_500(stack):
    base = stack()
    status, body = curl("-X", "POST", f"{base}/briefings", "-d", "{not json")
    assert status == 400 and body["error"].startswith("request body is not valid JSON")
    status, body = curl("-X", "POST", f"{base}/briefings", "-d", '{"topic": 7}')
    assert status == 422 and body["detail"][0]["loc"] == ["topic"]
    status, body = curl("-X", "POST", f"{base}/briefings", "-d", '{"topic": ""}')
    assert status == 422
    assert curl(f"{base}/nowhere") == (404, {"error": "no function serves GET /nowhere"})
    assert curl("-X", "DELETE", f"{base}/briefings") == (405, {"error": "DELETE is not allowed on /briefings"})
    assert "\nallow: POST\n" in curl("-X", "DELETE", "-o", "/dev/null", "-D", "-", f"{base}/briefings")[1]
    assert curl(f"{base}/briefings/not-a-number")[0] == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_health_reports_redis_and_database_and_503_when_redis_is_down(spawn, database_url, tmp_path: Path):
    own_redis = RedisServer(tmp_path / "redis")
    port = free_port()
    spawn(
        ["runtime", "web", "--host", "127.0.0.1", "--port", str(port)],
        ROOT,
        {"REDIS_URL": own_redis.url, "DATABASE_URL": database_url},
    )
    wait_for_port(port)
    assert curl(f"http://127.0.0.1:{port}/health") == (200, {"status": "ok", "redis": "ok", "database": "ok"})
    own_redis.stop()
    status, body = curl(f"http://127.0.0.1:{port}/health")
    assert status == 503 and body["status"] == "unavailable" and body["redis"].startswith("down:")
    assert body["database"] == "ok"
    assert curl(f"http://127.0.0.1:{port}/health/live") == (200, {"status": "ok"})

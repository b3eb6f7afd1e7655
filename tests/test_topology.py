"""The production topology without a cluster: `runtime web`, two `runtime worker`s and `runtime scheduler`
as separate processes on one Redis and one Postgres (as the Deployments run them)."""

from __future__ import annotations

import re
import signal
import time

import httpx
import pytest

from tests.conftest import POSTGRES_URL, ROOT, free_port, reset_postgres, wait_for_port


@pytest.mark.skipif(POSTGRES_URL is None, reason="no Postgres reachable (set TEST_POSTGRES_URL)")
def test_two_workers_share_the_tasks_and_a_sigterm_loses_nothing(spawn, redis_url):
    assert POSTGRES_URL is not None
    reset_postgres(POSTGRES_URL)
    env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": POSTGRES_URL,
        "BRIEFING_SOURCE_LATENCY": "1.0",
        "WORKER_HEALTH_PORT": "0",
        "SHUTDOWN_TIMEOUT": "20",
    }
    port = free_port()
    spawn(["runtime", "web", "--host", "127.0.0.1", "--port", str(port)], ROOT, env)
    workers = [spawn(["runtime", "worker"], ROOT, env) for _ in range(2)]
    for worker in workers:
        worker.wait_for("ready")
    spawn(["runtime", "scheduler"], ROOT, env).wait_for("holds the lock")
    wait_for_port(port)
    base = f"http://127.0.0.1:{port}"

    ids = [httpx.post(f"{base}/briefings", json={"topic": f"t{i}"}).json()["id"] for i in range(16)]
    # stop one worker while it runs tasks: they finish (or are handed back), nothing is lost
    workers[0].wait_for("start generate_briefing")
    workers[0].signal(signal.SIGTERM)
    assert workers[0].wait(30) == 0

    deadline = time.monotonic() + 60
    statuses: list[str] = []
    while time.monotonic() < deadline:
        statuses = [httpx.get(f"{base}/briefings/{i}").json()["status"] for i in ids]
        if all(s == "completed" for s in statuses):
            break
        time.sleep(0.2)
    assert statuses == ["completed"] * len(ids)

    done = [len(re.findall(r"done generate_briefing", w.output)) for w in workers]
    assert done[0] > 0 and done[1] > 0, done  # both workers took tasks
    assert sum(done) == len(ids)  # each briefing was generated exactly once

"""An @http function that enqueues while Redis is down (a real Redis, killed), in process: with the
database up the run is accepted (200 and its id; it waits in the outbox); an enqueue that cannot be
accepted (Redis and the database down, or a `unique` run that only Redis can tell apart) is a JSON 503
with Retry-After, not a 500. A handler's own error stays a 500."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from runtime import Runtime
from runtime.errors import EnqueueUncertain
from runtime.settings import Settings
from runtime.store.outbox import UNSENT
from runtime.web.app import create_web_app, failure_response
from tests.conftest import RedisServer, write_app

MODULE = f"outage_{uuid.uuid4().hex[:8]}"
SOURCE = """
from runtime import http, task

@task
async def work(n: int) -> int:
    return n

@task
async def once(n: int) -> int:
    return n

@http
async def enqueue_work(n: int):
    return {"id": await work.enqueue(n=n)}

@http
async def enqueue_once(n: int):
    return {"id": await once.enqueue(n=n)}

@http
async def buggy():
    raise RuntimeError("the handler's own bug")
"""
MANIFEST = f"""
app: outage-test
functions:
  work: {{handler: "{MODULE}:work", task: {{}}}}
  once: {{handler: "{MODULE}:once", task: {{unique: 10m}}}}
  enqueue_work: {{handler: "{MODULE}:enqueue_work", http: {{path: /work}}}}
  enqueue_once: {{handler: "{MODULE}:enqueue_once", http: {{path: /once}}}}
  buggy: {{handler: "{MODULE}:buggy", http: {{path: /buggy}}}}
"""


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """The web app on a runtime whose Redis is already killed (SIGKILL)."""
    app = write_app(tmp_path / "app", MANIFEST, {f"{MODULE}.py": SOURCE})
    server = RedisServer(tmp_path / "redis")
    runtime = Runtime.from_manifest(app, Settings(redis_url=server.url, database_url=f"sqlite:///{tmp_path}/r.db"))
    await runtime.start()
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    await asyncio.sleep(0.1)  # the pooled connections see the server gone
    transport = httpx.ASGITransport(app=create_web_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, runtime
    await runtime.store.close()


async def test_with_redis_down_an_enqueue_is_accepted_and_waits_in_the_outbox(served: Any) -> None:
    client, runtime = served
    response = await client.get("/work?n=1")
    assert response.status_code == 200, response.text  # the old code: 500, "enqueue ... is uncertain"
    run = await runtime.store.get(response.json()["id"])
    assert run is not None and run.status == "queued" and run.version == UNSENT


async def test_an_enqueue_that_cannot_be_accepted_is_a_503_with_retry_after(served: Any) -> None:
    client, runtime = served
    response = await client.get("/once?n=1")  # a unique run: only Redis can say whether it is a duplicate
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json() == {"error": "Redis is unavailable; retry shortly"}
    async with runtime.store.engine.begin() as conn:  # and now the database refuses the insert too
        await conn.execute(text("ALTER TABLE runs RENAME TO runs_away"))
    response = await client.get("/work?n=2")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json() == {"error": "Redis and the database are unavailable; retry shortly"}
    async with runtime.store.engine.begin() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM runs_away"))).scalar() == 0  # nothing left behind
    response = await client.get("/buggy")  # a handler's own error is not the platform's unavailability
    assert response.status_code == 500 and "retry-after" not in response.headers


def test_an_uncertain_enqueue_is_a_503() -> None:
    response = failure_response(EnqueueUncertain("enqueue of 'work' is uncertain", ["r1"]), "GET /work")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"

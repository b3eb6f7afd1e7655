"""Baseline for the enqueue endpoint: bare Starlette on uvicorn, one POST that queues a task with taskiq's
`kiq()` on `RedisStreamBroker` (started in the lifespan) and answers 202 with the task id.

uvicorn bench.apps.starlette_kiq_app:app --port P --no-access-log

The body is validated by a pydantic model, as our `@http` function's is, so both do the same work.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from taskiq_redis import RedisStreamBroker

broker = RedisStreamBroker(url=os.environ["REDIS_URL"])


class Topic(BaseModel):
    topic: str


@broker.task(task_name="generate")
async def generate(topic: str) -> None:
    return None


async def submit(request: Request) -> JSONResponse:
    body = Topic.model_validate_json(await request.body())
    sent = await generate.kiq(topic=body.topic)
    return JSONResponse({"run_id": sent.task_id}, status_code=202)


async def live(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await broker.startup()
    try:
        yield
    finally:
        await broker.shutdown()


app = Starlette(
    routes=[Route("/enqueue", submit, methods=["POST"]), Route("/health/live", live, methods=["GET"])],
    lifespan=lifespan,
)

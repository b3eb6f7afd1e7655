"""The benchmark's functions, written as a user of our runtime writes them."""

from __future__ import annotations

from starlette.requests import Request

from bench.apps import probe
from runtime import http, task


@task
async def noop() -> None:
    await probe.record_done()


@task
async def sized(blob: str) -> None:
    await probe.record_done()


@task
async def stamp(enqueued_at: float) -> None:
    await probe.record_latency(enqueued_at)


@http
async def hello(request: Request) -> dict[str, str]:
    return {"hello": "world"}

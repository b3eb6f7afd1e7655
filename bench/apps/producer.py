"""The command line every app module shares for putting work on its queue.

    python -m bench.apps.<system>_app fill N        # N no-op tasks, one enqueue call each
    python -m bench.apps.<system>_app bulk N        # N no-op tasks in bulk (systems that have it)
    python -m bench.apps.<system>_app latency N     # N latency tasks, one at a time on an idle queue
    python -m bench.apps.<system>_app fill N --size B   # N tasks whose one argument is a B-byte string

The fill also reports the producer's CPU time per enqueue call (`cpu_us_per_call`), the cost a web
process pays for each task it enqueues.

Each prints one JSON line with what it measured. A system supplies async callables; sync clients
are wrapped by the app module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from bench.apps import probe

IDLE_GAP_S = (0.005, 0.025)  # random pause after each sample is seen: the next meets an idle queue, at a
# random phase of any polling loop (a fixed pause would alias with a poll period)
SAMPLE_TIMEOUT_S = 10.0


async def _fill(enqueue_noop: Callable[[], Awaitable[Any]], n: int) -> dict[str, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await enqueue_noop()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "n": n,
        "seconds": seconds,
        "per_s": n / seconds if seconds else None,
        "cpu_us_per_call": cpu / n * 1e6 if n else None,
    }


async def _bulk(enqueue_many: Callable[[int], Awaitable[Any]], n: int) -> dict[str, Any]:
    started = time.perf_counter()
    await enqueue_many(n)
    seconds = time.perf_counter() - started
    return {"n": n, "seconds": seconds, "per_s": n / seconds if seconds else None}


async def _latency(enqueue_stamp: Callable[[float], Awaitable[Any]], n: int) -> dict[str, Any]:
    client = aioredis.from_url(probe.redis_url())
    try:
        base = int(await client.llen(probe.LATENCY))
        for i in range(n):
            await enqueue_stamp(time.time())
            deadline = time.monotonic() + SAMPLE_TIMEOUT_S
            while int(await client.llen(probe.LATENCY)) < base + i + 1:
                if time.monotonic() > deadline:
                    return {"n": i, "error": f"sample {i} not started within {SAMPLE_TIMEOUT_S}s"}
                await asyncio.sleep(0.001)
            await asyncio.sleep(random.uniform(*IDLE_GAP_S))
        return {"n": n}
    finally:
        await client.aclose()


def main(
    *,
    setup: Callable[[], Awaitable[None]],
    teardown: Callable[[], Awaitable[None]],
    enqueue_noop: Callable[[], Awaitable[Any]],
    enqueue_stamp: Callable[[float], Awaitable[Any]],
    enqueue_many: Callable[[int], Awaitable[Any]] | None = None,
    enqueue_sized: Callable[[str], Awaitable[Any]] | None = None,
) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["fill", "bulk", "latency"])
    parser.add_argument("n", type=int)
    parser.add_argument("--size", type=int, help="fill with tasks carrying one string argument of this many bytes")
    args = parser.parse_args()

    async def run() -> dict[str, Any]:
        await setup()
        try:
            if args.mode == "fill" and args.size is not None:
                if enqueue_sized is None:
                    return {"error": "no sized task in this system"}
                blob = "x" * args.size

                async def enqueue_blob() -> Any:
                    return await enqueue_sized(blob)

                return await _fill(enqueue_blob, args.n)
            if args.mode == "fill":
                return await _fill(enqueue_noop, args.n)
            if args.mode == "bulk":
                if enqueue_many is None:
                    return {"error": "no bulk enqueue in this system"}
                return await _bulk(enqueue_many, args.n)
            return await _latency(enqueue_stamp, args.n)
        finally:
            await teardown()

    print(json.dumps(asyncio.run(run())), flush=True)

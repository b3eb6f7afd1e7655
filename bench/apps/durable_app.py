"""The durable-functions benchmark's producer (bench/durable.py), through `Runtime.from_manifest` on
bench/apps/ours/durable.yaml:

    python -m bench.apps.durable_app steps N      # N `steps` runs (10 no-op steps each), in bulk
    python -m bench.apps.durable_app units N      # N `unit` runs (one no-op task each), in bulk
    python -m bench.apps.durable_app waits M      # M `sleeper` runs due one after another, 1.5 s ahead and on,
                                                  # until each has stamped its resume; then M `waiter` runs and,
                                                  # once all wait, one event at a time, each sent after the
                                                  # previous one's waiter stamped its resume

Each prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent / "ours"
MANIFEST = APP_DIR / "durable.yaml"
BULK_CHUNK = 1000
SLEEP_LEAD_S = 1.5  # the first sleeper is due this long after the enqueue: every one has suspended by then
SLEEP_GAP_S = (0.01, 0.04)  # between two sleepers' wake-up times: each meets an idle worker
EVENT_GAP_S = (0.005, 0.025)  # pause after a waiter stamped, before the next event (as the tasks' latency)
SAMPLE_TIMEOUT_S = 30.0


async def _bulk(fn: Any, arguments: list[dict[str, Any]]) -> None:
    for start in range(0, len(arguments), BULK_CHUNK):
        await fn.enqueue_many(arguments[start : start + BULK_CHUNK])


async def _until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        await asyncio.sleep(0.002)


async def _sleeps(fns: Any, redis: Any, n: int) -> None:
    base = int(await redis.llen(fns.SLEEP_LATE))
    wake, at = [], time.time() + SLEEP_LEAD_S
    for _ in range(n):
        wake.append({"wake_at": at})
        at += random.uniform(*SLEEP_GAP_S)
    await _bulk(fns.sleeper, wake)

    async def resumed() -> bool:
        return int(await redis.llen(fns.SLEEP_LATE)) >= base + n

    await _until(f"{n} sleepers resumed", resumed, at - time.time() + SAMPLE_TIMEOUT_S)


async def _events(fns: Any, redis: Any, waits: str, send_event: Any, n: int) -> None:
    base = int(await redis.llen(fns.EVENT_LATENCY))
    await _bulk(fns.waiter, [{"i": i} for i in range(n)])

    async def waiting() -> bool:
        return int(await redis.hlen(waits)) >= n

    await _until(f"{n} waiters waiting", waiting, SAMPLE_TIMEOUT_S + n / 50)
    for i in range(n):
        await send_event(fns.EVENT, {"i": i, "sent_at": time.time()})

        async def stamped(i: int = i) -> bool:
            return int(await redis.llen(fns.EVENT_LATENCY)) >= base + i + 1

        await _until(f"the waiter of event {i} resumed", stamped, SAMPLE_TIMEOUT_S)
        await asyncio.sleep(random.uniform(*EVENT_GAP_S))


async def main(mode: str, n: int) -> dict[str, Any]:
    sys.path.insert(0, str(APP_DIR))
    from runtime import Runtime, send_event  # type: ignore[attr-defined]

    async with AsyncExitStack() as stack:
        rt = await stack.enter_async_context(Runtime.from_manifest(MANIFEST))
        import durable_functions as fns  # the module the manifest's handlers name, imported from the app root

        from bench.apps import probe

        redis = probe.client()
        started = time.perf_counter()
        if mode == "steps":
            await _bulk(fns.steps, [{} for _ in range(n)])
        elif mode == "units":
            await _bulk(fns.unit, [{} for _ in range(n)])
        elif mode == "waits":
            await _sleeps(fns, redis, n)
            await _events(fns, redis, rt.keys.event_waits(fns.EVENT), send_event, n)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        return {"n": n, "seconds": time.perf_counter() - started}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["steps", "units", "waits"])
    parser.add_argument("n", type=int)
    args = parser.parse_args()
    try:
        result = asyncio.run(main(args.mode, args.n))
    except (TimeoutError, RuntimeError) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)

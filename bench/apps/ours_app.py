"""Our runtime's producer: enqueues `bench/apps/ours` functions through `Runtime.from_manifest`.

runtime worker --manifest bench/apps/ours/manifest.yaml     (cwd: bench/apps/ours)
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bench.apps import producer

APP_DIR = Path(__file__).resolve().parent / "ours"
MANIFEST = APP_DIR / "manifest.yaml"
BULK_CHUNK = 1000

_stack = AsyncExitStack()
_functions: dict[str, Any] = {}


async def _setup() -> None:
    sys.path.insert(0, str(APP_DIR))
    from runtime import Runtime  # type: ignore[attr-defined]

    await _stack.enter_async_context(Runtime.from_manifest(MANIFEST))
    import bench_functions  # the module the manifest's handlers name, imported from the app root

    _functions["noop"] = bench_functions.noop
    _functions["stamp"] = bench_functions.stamp
    _functions["sized"] = bench_functions.sized


async def _teardown() -> None:
    await _stack.aclose()


async def _enqueue_noop() -> None:
    await _functions["noop"].enqueue()


async def _enqueue_stamp(enqueued_at: float) -> None:
    await _functions["stamp"].enqueue(enqueued_at=enqueued_at)


async def _enqueue_sized(blob: str) -> None:
    await _functions["sized"].enqueue(blob=blob)


async def _enqueue_many(n: int) -> None:
    for start in range(0, n, BULK_CHUNK):
        await _functions["noop"].enqueue_many([{} for _ in range(min(BULK_CHUNK, n - start))])


if __name__ == "__main__":
    producer.main(
        setup=_setup,
        teardown=_teardown,
        enqueue_noop=_enqueue_noop,
        enqueue_stamp=_enqueue_stamp,
        enqueue_many=_enqueue_many,
        enqueue_sized=_enqueue_sized,
    )

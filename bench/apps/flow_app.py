"""The flow-control benchmark's producer: enqueues `flow_functions:keyed` runs through the manifest in
BENCH_FLOW_MANIFEST (bench/apps/ours/flow-*.yaml), `k` cycling over KEYS values.

runtime worker --manifest bench/apps/ours/flow-keyed.yaml     (cwd: bench/apps/ours)
"""

from __future__ import annotations

import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bench.apps import producer

APP_DIR = Path(__file__).resolve().parent / "ours"
KEYS = 1000  # distinct values of the concurrency key
BULK_CHUNK = 1000

_stack = AsyncExitStack()
_functions: dict[str, Any] = {}
_sent = [0]


async def _setup() -> None:
    sys.path.insert(0, str(APP_DIR))
    from runtime import Runtime  # type: ignore[attr-defined]

    await _stack.enter_async_context(Runtime.from_manifest(Path(os.environ["BENCH_FLOW_MANIFEST"])))
    import flow_functions  # the module the manifests' handlers name, imported from the app root

    _functions["keyed"] = flow_functions.keyed


async def _teardown() -> None:
    await _stack.aclose()


async def _enqueue_one() -> None:
    await _functions["keyed"].enqueue(k=_sent[0] % KEYS)
    _sent[0] += 1


async def _enqueue_many(n: int) -> None:
    for start in range(0, n, BULK_CHUNK):
        await _functions["keyed"].enqueue_many([{"k": i % KEYS} for i in range(start, min(n, start + BULK_CHUNK))])


async def _unused(enqueued_at: float) -> None:
    raise NotImplementedError("the flow benchmark measures throughput only")


if __name__ == "__main__":
    producer.main(
        setup=_setup,
        teardown=_teardown,
        enqueue_noop=_enqueue_one,
        enqueue_stamp=_unused,
        enqueue_many=_enqueue_many,
    )

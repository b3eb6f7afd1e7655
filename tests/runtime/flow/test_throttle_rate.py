"""A throttle across three workers holds its rate: starts per second, read from the task's own log, stay within 5% of
the limit for the whole run (12 s here; CHAOS_FULL=1: 60 s)."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from tests.conftest import write_app
from tests.runtime.workers import MARK, events, start_worker, wait_until

pytestmark = pytest.mark.slow

SECONDS = 60 if os.environ.get("CHAOS_FULL") == "1" else 12
RATE = 20
MODULE = f"throttled_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
from runtime import task

@task
async def call_api(n: int) -> None:
    mark(fn="call_api", n=n)
"""
)

MANIFEST = f"""
app: throttle-rate
defaults: {{concurrency: 10}}
functions:
  call_api: {{handler: "{MODULE}:call_api", task: {{throttle: {{limit: {RATE}, period: 1s}}}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("throttle"), MANIFEST, {f"{MODULE}.py": SOURCE})


async def test_starts_per_second_stay_within_5_percent_of_the_limit(spawn: Any, app: Path, env, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        start_worker(spawn, app, env)
    total = RATE * SECONDS
    await rt.app.tasks["call_api"].enqueue_many([{"n": n} for n in range(total)])
    await wait_until(lambda: len(events(env, "call_api")) >= total, SECONDS + 15, f"{total} starts")
    marks = events(env, "call_api")
    assert sorted(m["n"] for m in marks) == list(range(total))  # each once, none dropped
    first = min(m["t"] for m in marks)
    per_second = Counter(int(m["t"] - first) for m in marks)
    full = [per_second[s] for s in range(SECONDS - 1)]  # the last second is partial
    assert all(RATE * 0.95 <= count <= RATE * 1.05 for count in full), full
    assert len({m["pid"] for m in marks}) == 3  # all three workers started some

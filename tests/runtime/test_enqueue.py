"""The enqueue door: bad arguments and delays get errors that name them, big arguments are refused, and the
caller's answer is the truth (an error means nothing was queued and no record says `queued`). Fuzzed with a
fixed seed: every call either returns an id whose record and message exist, or raises a clear error."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from emulator.embedded_redis import EmbeddedRedis
from runtime import ArgumentsError, Runtime
from runtime.errors import EnqueueError
from runtime.settings import Settings
from tests.conftest import write_app

MODULE = f"enqueue_{uuid.uuid4().hex[:8]}"

SOURCE = """
from typing import Any
from runtime import task

@task
async def count(n: int) -> int:
    return n

@task
async def anything(data: Any = None, label: str = "") -> None:
    return None
"""

MANIFEST = f"""
app: enqueue-test
functions:
  count: {{handler: "{MODULE}:count", task: {{}}}}
  anything: {{handler: "{MODULE}:anything", task: {{}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("app"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
async def rt(app: Path, redis_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/runs.db", max_arguments_size=10_000)
    runtime = Runtime.from_manifest(app, settings)
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.mark.parametrize("delay", ["10", math.inf, -math.inf, math.nan, 1e12, -1, True, [1]])
async def test_a_bad_delay_is_an_error_that_names_it(rt: Runtime, delay: Any) -> None:
    with pytest.raises(ValueError, match="delay must be"):
        await rt.app.tasks["count"].enqueue(n=1, delay=delay)
    assert await rt.store.list() == []


async def test_an_integer_beyond_64_bits_is_an_error_that_says_so(rt: Runtime) -> None:
    with pytest.raises(ArgumentsError, match="64 bits"):
        await rt.app.tasks["count"].enqueue(n=10**100)
    with pytest.raises(ArgumentsError, match="64 bits"):
        await rt.app.tasks["anything"].enqueue(data={"deep": [10**30]})
    assert await rt.store.list() == [] and await rt.broker.redis.xlen(rt.keys.stream) == 0


async def test_arguments_over_max_arguments_size_are_refused(rt: Runtime) -> None:
    with pytest.raises(ArgumentsError, match="MAX_ARGUMENTS_SIZE is 10,000"):
        await rt.app.tasks["anything"].enqueue(data="x" * 20_000)
    assert await rt.store.list() == [] and await rt.broker.redis.xlen(rt.keys.stream) == 0


async def test_an_error_from_redis_means_nothing_was_queued_and_no_record_stays(app: Path, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persistent=False)
    server.start()
    settings = Settings(redis_url=server.url, database_url=f"sqlite:///{tmp_path}/runs.db")
    runtime = Runtime.from_manifest(app, settings)
    await runtime.start()
    try:
        server.stop()
        with pytest.raises(EnqueueError, match="nothing was queued"):
            await runtime.app.tasks["count"].enqueue(n=1)
        assert await runtime.store.list() == []  # old code: a record `queued` forever
    finally:
        await runtime.stop()


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([0, -1, 2**63 - 1, -(2**63), 2**63, 10**100, -(10**30)])
    if kind == 1:
        return rng.choice([0.0, -1.5, math.inf, -math.inf, math.nan, 1e308])
    if kind == 2:
        return "".join(chr(rng.randrange(0, 0x2FFF)) for _ in range(rng.randrange(0, 30)))
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        return "y" * rng.choice([0, 100, 9_000, 12_000])
    if kind == 5:
        return b"bytes"
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == 7:
        return {str(_value(rng, depth + 1))[:10]: _value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}
    if kind == 8:
        return {1: "non-string key"}
    return object()


async def test_fuzz_every_enqueue_either_queues_exactly_or_names_the_problem(rt: Runtime) -> None:
    rng = random.Random(20261123)
    queued, refused = [], 0
    for _ in range(300):
        name = rng.choice(["count", "anything"])
        kwargs: dict[str, Any] = {rng.choice(["n", "data", "label", "zz"]): _value(rng)}
        delay = rng.choice([None, None, 0, 0.5, -1, math.inf, "1"])
        try:
            queued.append(await rt.app.tasks[name].enqueue(delay=delay, **kwargs))
        except (ArgumentsError, ValueError) as exc:
            assert str(exc), "an error must say what is wrong"
            refused += 1
    runs = {run.id for run in await rt.store.list(limit=1000)}
    assert runs == set(queued)  # every id has its record; a refused call left none
    stream = await rt.broker.redis.xlen(rt.keys.stream)
    delayed = await rt.broker.redis.zcard(rt.keys.delayed)
    assert stream + delayed == len(queued)  # and its message; a refused call sent none
    assert queued and refused

"""A gate's release of the slots its runs held (runtime/flow/gate.py), against a real Redis: the loop turn's
releases go packed on the gate's own connection, and still free every slot and promote the waiting runs when
Redis lost the script (restarted, SCRIPT FLUSH) or while tracing sends them through redis-py."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio

from runtime import tracing
from runtime.flow.gate import Gate
from runtime.queue.keys import Keys


async def held_and_waiting(gate: Gate, client: redis.asyncio.Redis, runs: int) -> tuple[str, str, str]:
    """`runs` runs holding slots of one limit of 1 per key (one key each), and one run waiting for key 0."""
    stream = gate.keys.queue("default").stream
    for i in range(runs):
        running, waiting = gate.keys.flow(f"running:f:0:{i}"), gate.keys.flow(f"waiting:f:0:{i}")
        await client.zadd(running, {f"run-{i}": 10**13})
        gate._hold(f"default/{i}-0", f"run-{i}", [((running, waiting), 1)])
    waiting = gate.keys.flow("waiting:f:0:0")
    await client.rpush(waiting, f'{stream}\n{{"task_id":"next"}}')
    await client.sadd(gate.keys.flow("waiting"), waiting)
    await client.hset(gate.keys.flow("limits"), waiting, gate.keys.flow("running:f:0:0") + "\n1")
    return stream, gate.keys.flow("running:f:0:0"), waiting


@pytest.mark.parametrize("lost_scripts", [False, True])
@pytest.mark.parametrize("traced", [False, True])
async def test_released_slots_are_freed_and_the_waiting_run_is_sent(
    redis_url: str, lost_scripts: bool, traced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    if traced:
        monkeypatch.setattr(tracing, "enabled", lambda: True)
    gate = Gate(client, Keys("rel"), {}, lease=10.0, consumer="c1")
    try:
        stream, _, waiting = await held_and_waiting(gate, client, runs=5)
        if lost_scripts:
            await client.script_flush()
        for i in range(5):  # finished in one loop turn: one call frees them all
            gate.release(f"default/{i}-0")
        assert gate._flushing is not None
        await gate._flushing
        for i in range(5):
            assert await client.zcard(gate.keys.flow(f"running:f:0:{i}")) == 0
        assert not gate.held
        entries = await client.xrange(stream)
        assert [fields[b"data"] for _, fields in entries] == [b'{"task_id":"next"}']  # the waiting run, sent
        assert not await client.exists(waiting) and not await client.sismember(gate.keys.flow("waiting"), waiting)
    finally:
        await client.aclose()


async def test_a_release_redis_refuses_is_logged_and_the_gate_keeps_going(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    gate = Gate(client, Keys("rel"), {}, lease=10.0, consumer="c1")
    try:
        await held_and_waiting(gate, client, runs=1)
        await client.set(gate.keys.flow("running:f:0:0"), "not a sorted set")  # the script's ZREM fails
        gate.release("default/0-0")
        assert gate._flushing is not None
        await asyncio.wait_for(gate._flushing, 5)
        assert "cannot free a concurrency slot" in caplog.text
        await client.delete(gate.keys.flow("running:f:0:0"))
        await held_and_waiting(gate, client, runs=2)
        gate.release("default/1-0")
        await asyncio.wait_for(gate._flushing, 5)
        assert await client.zcard(gate.keys.flow("running:f:0:1")) == 0  # the next release goes through
    finally:
        await client.aclose()

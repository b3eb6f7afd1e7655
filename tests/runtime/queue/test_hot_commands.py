"""A worker's reads, start marks, renewals and acks go on connections the broker holds for them, packed by hand
(issue 25 point 1): no pool checkout per call, a blocking read holds up no mark or ack, and Redis's errors,
lost scripts and broken connections behave as on redis-py's path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ResponseError

from runtime.queue.broker import CANCELLED, STARTED, StreamBroker
from runtime.queue.keys import Keys


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[StreamBroker]:
    broker = StreamBroker(redis_url, Keys(f"hot{time.time_ns()}"))
    await broker.ensure_groups()
    yield broker
    await broker.redis.aclose()


async def one_turn(broker: StreamBroker, n: int) -> list[str]:
    """Send n messages, read them, mark them started, renew and ack them: the keys acked."""
    await broker.kick_many([b"m%d" % i for i in range(n)])
    deliveries = await broker.read(["default"], n, block_ms=None)
    verdicts = await asyncio.gather(*[broker.mark_started(d, f"run-{d.entry_id}", b"mark") for d in deliveries])
    assert verdicts == [STARTED] * n
    assert await broker.renew([d.key for d in deliveries]) == []
    assert await broker.ack([d.key for d in deliveries]) == []
    return [d.key for d in deliveries]


async def test_reads_marks_renewals_and_acks_take_no_connection_from_the_pool_per_call(broker: StreamBroker) -> None:
    pool: Any = broker.redis.connection_pool
    checkouts = 0
    get_connection = pool.get_connection

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal checkouts
        checkouts += 1
        return await get_connection(*args, **kwargs)

    pool.get_connection = counted
    for _ in range(20):
        await one_turn(broker, 5)
    assert checkouts <= 3, checkouts  # the enqueues' held connection, the reads', the marks' and acks'
    stream = broker.keys.queue("default").stream
    assert await broker.redis.xlen(stream) == 0  # every entry acked and deleted
    assert await broker.redis.hlen(broker.keys.queue("default").started) == 0


async def test_a_blocking_read_holds_up_no_mark_or_ack(broker: StreamBroker) -> None:
    await broker.kick_many([b"a", b"b"])
    first, second = await broker.read(["default"], 2, block_ms=None)
    waiting = asyncio.ensure_future(broker.read(["default"], 1, block_ms=2000))
    await asyncio.sleep(0.05)  # the read is waiting in Redis
    started = time.monotonic()
    assert await broker.mark_started(first, "r1", b"mark") == STARTED
    assert await broker.ack([first.key, second.key]) == []
    assert time.monotonic() - started < 1.0 and not waiting.done()
    await broker.kick_many([b"c"])
    assert [d.data for d in await waiting] == [b"c"]


async def test_a_read_cancelled_while_it_waits_leaves_the_next_read_its_own_reply(broker: StreamBroker) -> None:
    waiting = asyncio.ensure_future(broker.read(["default"], 1, block_ms=2000))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await broker.kick_many([b"after"])
    assert [d.data for d in await broker.read(["default"], 10, block_ms=None)] == [b"after"]


async def test_scripts_redis_lost_are_loaded_again(broker: StreamBroker) -> None:
    await one_turn(broker, 3)
    await broker.redis.script_flush()
    await one_turn(broker, 3)  # NOSCRIPT: loaded, then sent again


async def test_a_broken_connection_is_replaced_on_the_next_call(broker: StreamBroker, redis_url: str) -> None:
    await one_turn(broker, 2)
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await admin.client_kill_filter(_type="normal", skipme=True) >= 2
    finally:
        await admin.aclose()
    await asyncio.sleep(0.05)  # the server's close reaches the client
    await one_turn(broker, 2)


async def test_a_lost_group_is_an_error_that_says_nogroup(broker: StreamBroker) -> None:
    await broker.redis.delete(broker.keys.queue("default").stream)
    with pytest.raises(ResponseError, match="NOGROUP"):
        await broker.read(["default"], 10, block_ms=None)
    with pytest.raises(ResponseError, match="NOGROUP"):
        await broker.read(["default"], 10, block_ms=100)


async def test_a_mark_sees_a_cancel_and_an_ack_sends_the_next_attempt(broker: StreamBroker) -> None:
    keys = broker.keys.queue("default")
    await broker.kick_many([b"first", b"second"])
    first, second = await broker.read(["default"], 2, block_ms=None)
    await broker.redis.set(keys.cancel("r2"), 1)
    limit = (f"{broker.keys.app}:running:test", 1)
    assert await broker.mark_started(first, "r1", b"mark-1", [limit]) == STARTED
    assert await broker.mark_started(second, "r2", b"mark-2") == CANCELLED
    assert await broker.redis.hgetall(keys.started) == {first.entry_id.encode(): b"mark-1"}
    assert await broker.redis.zrange(limit[0], 0, -1) == [b"r1"]  # its slot is held
    big = b"x" * 100_000  # a next attempt bigger than redis-py's buffer cutoff
    due = time.time() + 60
    assert await broker.ack([first.key, second.key], {first.key: (big, due), second.key: (b"now", 0.0)}) == []
    assert [f[b"data"] for _, f in await broker.redis.xrange(keys.stream)] == [b"now"]
    assert await broker.redis.zrange(keys.delayed, 0, -1) == [big]
    assert await broker.ack([first.key]) == [first.key]  # no longer this worker's: reported lost


async def test_a_renewal_names_the_entries_another_worker_took(broker: StreamBroker, redis_url: str) -> None:
    await broker.kick_many([b"kept", b"taken"])
    kept, taken = await broker.read(["default"], 2, block_ms=None)
    other = StreamBroker(redis_url, broker.keys)
    try:
        stream = broker.keys.queue("default").stream
        await other.redis.xclaim(stream, broker.keys.group, other.consumer, 0, [taken.entry_id])
    finally:
        await other.redis.aclose()
    assert await broker.renew([kept.key, taken.key]) == [taken.key]

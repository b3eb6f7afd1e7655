"""Entries a worker hands back (it is stopping, or its read-ahead waited behind busy runners) are queued again at
once: the next read of any worker takes them. They were left to the leases' reclaim, which waits for the fence (a
whole lease after Redis or its workers start), so the first task after an emulator reload waited ~12 s."""

from __future__ import annotations

import time

from runtime.queue.broker import StreamBroker
from runtime.queue.keys import Keys


async def test_a_handed_back_entry_is_read_at_once_by_another_worker(redis_url: str) -> None:
    keys = Keys(f"release{time.time_ns()}")
    stopping, other = StreamBroker(redis_url, keys), StreamBroker(redis_url, keys)
    try:
        await stopping.ensure_groups()
        await stopping.kick_many([b'{"task_id": "r1"}', b'{"task_id": "r2"}'])
        taken = await stopping.read(["default"], 10, block_ms=None)
        assert [d.data for d in taken] == [b'{"task_id": "r1"}', b'{"task_id": "r2"}']
        assert await other.reclaim("default", 10) == []  # a fresh lease clock: reclaims wait for the fence
        await stopping.release([d.key for d in taken])

        started = time.monotonic()
        again = await other.read(["default"], 10, block_ms=1000)
        assert time.monotonic() - started < 0.5
        assert [d.data for d in again] == [b'{"task_id": "r1"}', b'{"task_id": "r2"}']
        assert all(d.started is None for d in again)  # handed back, not crashed: no start mark
        stream = keys.queue("default").stream
        pending = await other.redis.xpending(stream, keys.group)
        assert pending["pending"] == 2 and {c["name"] for c in pending["consumers"]} == {other.consumer.encode()}
        assert await other.redis.xlen(stream) == 2  # the old entries are gone, not left beside the new ones
        assert await stopping.reclaim("default", 10) == []  # and nothing is left to reclaim later
    finally:
        await stopping.redis.aclose()
        await other.redis.aclose()

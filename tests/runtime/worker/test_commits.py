"""A commit fences only the entries Redis has not touched for a quarter lease: a busy worker's commit is its ack
alone (no renewal round trip), and an entry another worker took while this one sat on it is still dropped
before any record of it is written."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from runtime.queue.broker import Delivery, StreamBroker
from runtime.queue.keys import Keys
from runtime.worker.commits import Commits

LEASE = 0.4  # seconds: a quarter lease (0.1 s) is the age past which an entry is fenced


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[StreamBroker]:
    broker = StreamBroker(redis_url, Keys(f"commits{time.time_ns()}"), lease_seconds=LEASE)
    await broker.ensure_groups()
    yield broker
    await broker.redis.aclose()


class Worker:
    """What a Commits needs from a worker: what it holds, and what it hears (in order)."""

    def __init__(self, broker: StreamBroker) -> None:
        self.held: dict[str, Delivery] = {}
        self.events: list[tuple[str, list[str]]] = []
        self.renewed: list[list[str]] = []
        self.commits = Commits(broker, [self.flush], self.keys, self.lost, self.done)
        renew = broker.renew

        async def counted(keys: list[str]) -> list[str]:
            self.renewed.append(list(keys))
            return await renew(keys)

        broker.renew = counted  # type: ignore[method-assign]

    def keys(self) -> list[str]:
        return list(self.held)

    async def flush(self) -> None:
        self.events.append(("flush", []))

    def lost(self, keys: list[str]) -> None:
        if keys:
            self.events.append(("lost", keys))
        for key in keys:
            self.held.pop(key, None)
            self.commits.forget(key)

    def done(self, keys: list[str]) -> None:
        self.events.append(("acked", keys))
        for key in keys:
            self.held.pop(key, None)

    async def read(self, broker: StreamBroker, n: int) -> list[Delivery]:
        sent = time.monotonic()
        deliveries = await broker.read(["default"], n, block_ms=None)
        for delivery in deliveries:
            self.held[delivery.key] = delivery
            self.commits.touched[delivery.key] = sent
        return deliveries


async def test_a_commit_of_entries_read_moments_ago_sends_no_renewal(broker: StreamBroker) -> None:
    worker = Worker(broker)
    for _ in range(5):
        await broker.kick_many([b"a", b"b", b"c"])
        first, *others = await worker.read(broker, 3)
        worker.commits.finished(first.key)
        await worker.commits.commit()
        for delivery in others:
            worker.commits.finished(delivery.key)
        await worker.commits.commit()
    assert worker.renewed == []
    assert await broker.redis.xlen(broker.keys.queue("default").stream) == 0
    assert worker.held == {} and worker.commits.touched == {}  # nothing left behind for acked entries


async def test_an_entry_held_past_a_quarter_lease_is_fenced_and_one_another_worker_took_is_dropped(
    broker: StreamBroker, redis_url: str
) -> None:
    worker = Worker(broker)
    await broker.kick_many([b"kept", b"taken", b"running"])
    kept, taken, running = await worker.read(broker, 3)
    other = StreamBroker(redis_url, broker.keys)
    try:  # another worker takes one (as after this one was paused past the lease)
        await other.redis.xclaim(
            broker.keys.queue("default").stream, broker.keys.group, other.consumer, 0, [taken.entry_id]
        )
    finally:
        await other.redis.aclose()
    await asyncio.sleep(LEASE / 4 + 0.05)
    worker.commits.finished(kept.key)
    worker.commits.finished(taken.key)
    await worker.commits.commit()
    assert worker.renewed == [[kept.key, taken.key, running.key]]
    # the taken one is dropped before any record is written, and never acked here
    assert worker.events == [("lost", [taken.key]), ("flush", []), ("acked", [kept.key])]
    assert list(worker.held) == [running.key]
    # the renewal counts as a touch: the next commit fences nothing
    worker.commits.finished(running.key)
    await worker.commits.commit()
    assert len(worker.renewed) == 1
    assert worker.events[-1] == ("acked", [running.key])

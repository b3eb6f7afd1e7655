"""The taskiq broker on Redis streams, with what taskiq-redis's `RedisStreamBroker` lacks.

- The consumer group starts at id 0, so tasks queued before the first worker are delivered.
- An ack is XACK + XDEL (one script), so the stream holds only unfinished tasks.
- Leases are fenced: a worker renews only entries it still owns (a script checks the owner before XCLAIM),
  acks only entries it still owns, and learns which ones it lost. Every worker reclaims entries whose lease
  lapsed (XAUTOCLAIM) on a timer, idle queue or not; but after a gap in which no worker reached Redis (Redis
  paused, or every worker away) nobody reclaims until the owners had a full lease period to renew, since idle
  times keep growing on Redis's clock while it is paused.
- A worker marks an entry as started (`{app}:started`) before its task runs; a reclaimed entry that carries
  a mark was running when its worker died, which the worker counts as a failed attempt (poison messages).
- Delayed messages (`delay=` and retry backoffs) wait in a sorted set scored by due time; a Lua script
  moves due ones onto the stream atomically, to the millisecond.
- A worker's commands per batch (reads, start marks, renewals, acks) are packed from templates and sent on
  connections held for them (runtime/queue/hot_commands.py), not through redis-py's pool per call.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from taskiq import AckableMessage, AsyncBroker, BrokerMessage

from runtime.queue import broker_scripts as scripts
from runtime.queue.hot_commands import HotCommands, Start
from runtime.queue.keys import Keys, QueueKeys
from runtime.queue.redis_client import async_client, is_cluster
from runtime.queue.stream_sends import StreamSends, connect

# a cluster worker waiting on several queues waits on each in turn this long (the latency it adds per queue)
_CLUSTER_SLICE_MS = 50


STARTED, CANCELLED, PAUSED, FULL = 1, 0, 2, 3  # what `mark_started` answers


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to this worker, from one queue. `data` is None for an entry without a
    `data` field; `started` is the mark of an earlier holder that started it and vanished; `deleted` is an
    entry deleted from the stream while it was pending (nothing to run, only to acknowledge)."""

    queue: str
    entry_id: str
    data: bytes | None
    started: bytes | None = None
    deleted: bool = False

    @property
    def key(self) -> str:
        """Unique among all queues (entry ids are unique only within one stream)."""
        return f"{self.queue}/{self.entry_id}"


def split_key(key: str) -> tuple[str, str]:
    """(queue, entry id) of a `Delivery.key`."""
    queue, _, entry_id = key.rpartition("/")
    return queue, entry_id


def by_queue(keys: Sequence[str]) -> dict[str, list[str]]:
    """Delivery keys grouped as {queue: [entry ids]}."""
    grouped: dict[str, list[str]] = {}
    for key in keys:
        queue, entry_id = split_key(key)
        grouped.setdefault(queue, []).append(entry_id)
    return grouped


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[bytes, bytes]:
    """Stream fields from a reply: a dict (redis-py) or a flat list (a Lua reply)."""
    if isinstance(raw, dict):
        return raw
    items = list(raw or [])
    return {items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)}


def _delivery(queue: str, entry_id: Any, raw_fields: Any, started: Any = None) -> Delivery:
    if not raw_fields:
        return Delivery(queue, _text(entry_id), None, deleted=True)
    data = _fields(raw_fields).get(b"data")
    return Delivery(queue, _text(entry_id), data, started or None)


class StreamBroker(AsyncBroker):
    """Kicks messages onto a queue's stream (or its delayed set) and hands them to workers with leases."""

    def __init__(
        self, redis_url: str, keys: Keys, queues: Sequence[str] = ("default",), *, lease_seconds: float = 10.0
    ) -> None:
        super().__init__()
        self.keys = keys
        self.queues = list(queues)
        self.redis_url = redis_url
        self.lease_ms = int(lease_seconds * 1000)
        # a burst waits for a free connection (up to 10 s) instead of failing with MaxConnectionsError
        self.redis: Redis = async_client(redis_url, max_connections=50, timeout=10, socket_connect_timeout=5)
        self.consumer = f"{uuid.uuid4().hex[:12]}"
        self.sends = StreamSends(self.redis)  # the XADDs of concurrent enqueues share one pipeline
        self._move_due = self.redis.register_script(scripts.MOVE_DUE)
        self._renew = self.redis.register_script(scripts.RENEW)
        self._reclaim = self.redis.register_script(scripts.RECLAIM)
        self._ack = self.redis.register_script(scripts.ACK)
        self._release = self.redis.register_script(scripts.RELEASE)
        self._start = self.redis.register_script(scripts.START)
        # reads, start marks, renewals and acks on connections held for them (redis-py's path for a cluster, or tracing)
        scripts_held = {"start": self._start, "renew": self._renew, "ack": self._ack}
        self.hot = HotCommands(self.redis, keys.group, self.consumer, self.lease_ms, scripts_held)
        # start marks asked for in the same loop turn go to Redis in one script call per queue
        self._starting: dict[str, list[tuple[str, str, bytes, Sequence[tuple[str, int]], asyncio.Future[int]]]] = {}
        self._marking: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        await super().startup()
        await self.ensure_groups()

    async def shutdown(self) -> None:
        await super().shutdown()
        await self.redis.aclose()

    async def ensure_groups(self) -> None:
        """Each queue's consumer group, created at id 0 so nothing queued before the first worker is lost."""
        for queue in self.queues:
            try:
                await self.redis.xgroup_create(self.keys.queue(queue).stream, self.keys.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # --- sending -----------------------------------------------------------------------------------

    async def kick(self, message: BrokerMessage) -> None:
        """Send one message; a `delay` label (seconds) parks it in the delayed set."""
        delay = float(message.labels.get("delay") or 0)
        await self.kick_many([message.message], queue=str(message.labels.get("queue") or "default"), delay=delay)

    async def kick_many(
        self, messages: Sequence[bytes], *, queue: str = "default", delay: float = 0, due: float | None = None
    ) -> None:
        """Send many messages to one queue in one round trip: to its stream, or to its delayed set for
        `delay` seconds (or until the time `due`). Raises `NotSent` when Redis could not be reached."""
        if not messages:
            return
        keys = self.keys.queue(queue)
        if delay <= 0 and due is None:
            await self.sends.send(keys.stream, messages)  # with the other enqueues of this loop turn
            return
        when = due if due is not None else time.time() + delay
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.delayed, dict.fromkeys(messages, when))
            await connect(pipe)
            await pipe.execute()

    async def move_due(self, limit: int = 500) -> float | None:
        """Move due delayed messages onto their streams; returns when the next one is due (or None)."""
        soonest: float | None = None
        for queue in self.queues:
            keys = self.keys.queue(queue)
            moved, next_due = await self._move_due(keys=[keys.delayed, keys.stream], args=[time.time(), limit])
            due = time.time() if int(moved) >= limit else (float(next_due) if next_due else None)
            if due is not None and (soonest is None or due < soonest):
                soonest = due
        return soonest

    async def paused(self) -> set[str]:
        """The queues that are paused now."""
        if not self.queues:
            return set()
        keys = [self.keys.queue(q).paused for q in self.queues]
        # a cluster: each queue's flag is in its own slot (one MGET over several is CROSSSLOT)
        flags = await (self.redis.mget_nonatomic(keys) if is_cluster(self.redis) else self.redis.mget(keys))  # type: ignore[attr-defined]
        return {queue for queue, flag in zip(self.queues, flags, strict=True) if flag}

    # --- receiving ---------------------------------------------------------------------------------

    async def read(self, queues: Sequence[str], count: int, block_ms: int | None) -> list[Delivery]:
        """New entries for this consumer from these queues (waits up to block_ms; None: not at all)."""
        if len(queues) > 1 and is_cluster(self.redis):
            return await self._read_each(queues, count, block_ms)
        streams = tuple(self.keys.queue(q).stream for q in queues)
        if self.hot.usable():
            reply: Any = await self.hot.xreadgroup(streams, count, block_ms)
        else:
            group, consumer = self.keys.group, self.consumer
            reply = await self.redis.xreadgroup(group, consumer, dict.fromkeys(streams, ">"), count, block_ms)
        queue_of = dict(zip(streams, queues, strict=True))
        out: list[Delivery] = []
        for stream, entries in reply.items() if isinstance(reply, dict) else reply or []:  # a dict in RESP3
            queue = queue_of[_text(stream)]
            out.extend(_delivery(queue, entry_id, fields) for entry_id, fields in entries or [])
        return out

    async def _read_each(self, queues: Sequence[str], count: int, block_ms: int | None) -> list[Delivery]:
        """A cluster: each queue's stream is in its own slot, and one XREADGROUP over several is CROSSSLOT.
        So read them one by one, waiting on each in turn for a short slice, until block_ms has passed."""
        deadline = time.monotonic() + (block_ms or 0) / 1000
        slice_ms = None if block_ms is None else max(1, min(_CLUSTER_SLICE_MS, block_ms))
        while True:
            for queue in queues:
                deliveries = await self.read([queue], count, slice_ms)
                if deliveries:
                    return deliveries
            if time.monotonic() >= deadline:
                return []

    async def reclaim(self, queue: str, count: int) -> list[Delivery]:
        """Entries whose lease lapsed (their worker died), now this consumer's, with their start marks."""
        keys = self.keys.queue(queue)
        reply = await self._reclaim(
            keys=[keys.stream, keys.lease_clock, keys.reclaim_fence, keys.started, keys.paused],
            args=[self.keys.group, self.consumer, self.lease_ms, count],
        )
        return [_delivery(queue, entry_id, fields, started) for entry_id, fields, started in reply]

    async def renew(self, delivery_keys: Sequence[str]) -> list[str]:
        """Renew the lease on entries this worker holds (delivery keys); returns those it no longer owns."""
        lost: list[str] = []
        for queue, entry_ids in by_queue(delivery_keys).items():
            keys = self.keys.queue(queue)
            if self.hot.usable():
                reply = await self.hot.renew(keys, entry_ids)
            else:
                reply = await self._renew(
                    keys=[keys.stream, keys.lease_clock, keys.reclaim_fence],
                    args=[self.keys.group, self.consumer, self.lease_ms, *entry_ids],
                )
            lost.extend(f"{queue}/{_text(entry_id)}" for entry_id in reply)
        return lost

    async def mark_started(
        self, delivery: Delivery, run_id: str, mark: bytes, slots: Sequence[tuple[str, int]] = ()
    ) -> int:
        """Record that this entry's task is starting (so a crash while running it is counted), in the
        same step as checking it was not cancelled and its queue is not paused, and as taking a slot in each of
        its concurrency limits (`slots`: (running set, limit)): STARTED (run it), CANCELLED (never run it),
        PAUSED (give it back: it runs after `resume`) or FULL (a limit is full: nothing was done)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._starting.setdefault(delivery.queue, []).append((delivery.entry_id, run_id, mark, slots, future))
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._mark_waiting())
        return await future

    async def _mark_waiting(self) -> None:
        try:
            await self._mark_all()
        except BaseException:  # cancelled: no runner may wait forever
            for items in self._starting.values():
                for *_, future in items:
                    future.cancel()
            self._starting.clear()
            raise

    async def _mark_all(self) -> None:
        await asyncio.sleep(0)  # runners starting in this loop turn join the call
        while self._starting:
            batches, self._starting = self._starting, {}
            for queue, items in batches.items():
                try:
                    verdicts = await self._mark(self.keys.queue(queue), [item[:4] for item in items])
                except Exception as exc:
                    for *_, future in items:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (*_, future), verdict in zip(items, verdicts, strict=True):
                    if not future.done():
                        future.set_result(int(verdict))

    async def _mark(self, keys: QueueKeys, runs: list[Start]) -> list[int]:
        if self.hot.usable():
            return await self.hot.start(keys, runs)
        script_keys: list[str] = [keys.started, keys.paused]
        args: list[Any] = [self.lease_ms]
        for entry_id, run_id, mark, slots in runs:
            script_keys += [keys.cancel(run_id), *(running for running, _ in slots)]
            args += [entry_id, mark, run_id, len(slots), *(limit for _, limit in slots)]
        verdicts: list[int] = await self._start(keys=script_keys, args=args)
        return verdicts

    async def release(self, delivery_keys: Sequence[str]) -> None:
        """Give entries back at once (a stopping worker, read-ahead behind busy runners): each is queued again
        as a new entry (at the end of its stream), which any worker's next read takes."""
        for queue, entry_ids in by_queue(delivery_keys).items():
            keys = self.keys.queue(queue)
            await self._release(keys=[keys.stream, keys.started], args=[self.keys.group, self.consumer, *entry_ids])

    async def ack(
        self, delivery_keys: Sequence[str], retries: dict[str, tuple[bytes, float]] | None = None
    ) -> list[str]:
        """Acknowledge and delete finished entries this worker still owns, sending with each its next
        attempt if it has one (`retries`: delivery key -> (message, due time)); returns those it lost."""
        lost: list[str] = []
        retries = retries or {}
        for queue, entry_ids in by_queue(delivery_keys).items():
            keys = self.keys.queue(queue)
            entries: list[tuple[str, bytes, int]] = []
            for entry_id in entry_ids:
                message, due = retries.get(f"{queue}/{entry_id}", (b"", 0.0))
                entries.append((entry_id, message, int(due * 1000)))
            if self.hot.usable():
                reply = await self.hot.ack(keys, entries)
            else:
                args = [self.keys.group, self.consumer, *(value for entry in entries for value in entry)]
                reply = await self._ack(keys=[keys.stream, keys.started, keys.delayed], args=args)
            lost.extend(f"{queue}/{_text(entry_id)}" for entry_id in reply)
        return lost

    async def listen(self) -> AsyncGenerator[bytes | AckableMessage, None]:
        """taskiq's receiver interface (our Worker reads in batches with leases instead)."""
        while True:
            for delivery in await self.read(self.queues, count=10, block_ms=1000):
                if delivery.data is None:
                    continue

                async def ack(key: str = delivery.key) -> None:
                    await self.ack([key])

                yield AckableMessage(data=delivery.data, ack=ack)

"""The taskiq broker on Redis streams, with what taskiq-redis's `RedisStreamBroker` lacks.

- The consumer group starts at id 0, so tasks queued before the first worker are delivered.
- An ack is XACK + XDEL in one round trip, so the stream holds only unfinished tasks.
- A worker keeps a lease on what it runs (XCLAIM refreshes the idle time), and every worker reclaims
  entries whose lease has lapsed (XAUTOCLAIM) on a timer, idle queue or not: a dead worker's tasks run
  again within `lease_seconds`, and a healthy long task is never handed to a second worker.
- Delayed messages (`delay=` and retry backoffs) wait in a sorted set scored by due time; a Lua script
  moves due ones onto the stream atomically, to the millisecond.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from taskiq import AckableMessage, AsyncBroker, BrokerMessage

from runtime.keys import Keys

_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, message in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'data', message)
  redis.call('ZREM', KEYS[1], message)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, first[2] or false}
"""


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to this worker."""

    entry_id: str
    data: bytes


class StreamBroker(AsyncBroker):
    """Kicks messages onto `{app}:tasks` (or the delayed set) and hands them to workers with leases."""

    def __init__(self, redis_url: str, keys: Keys, *, lease_seconds: float = 10.0) -> None:
        super().__init__()
        self.keys = keys
        self.lease_ms = int(lease_seconds * 1000)
        self.redis: Redis = Redis.from_url(redis_url, max_connections=50, socket_connect_timeout=5)
        self.consumer = f"{uuid.uuid4().hex[:12]}"
        self._move_due = self.redis.register_script(_MOVE_DUE)

    async def startup(self) -> None:
        await super().startup()
        await self.ensure_group()

    async def shutdown(self) -> None:
        await super().shutdown()
        await self.redis.aclose()

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.stream, self.keys.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- sending -----------------------------------------------------------------------------------

    async def kick(self, message: BrokerMessage) -> None:
        """Send one message; a `delay` label (seconds) parks it in the delayed set."""
        delay = float(message.labels.get("delay") or 0)
        await self.kick_many([message.message], delay=delay)

    async def kick_many(self, messages: Sequence[bytes], *, delay: float = 0) -> None:
        """Send many messages in one round trip."""
        if not messages:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            if delay > 0:
                due = time.time() + delay
                pipe.zadd(self.keys.delayed, {message: due for message in messages})
            else:
                for message in messages:
                    pipe.xadd(self.keys.stream, {b"data": message})
            await pipe.execute()

    async def move_due(self, limit: int = 500) -> float | None:
        """Move due delayed messages onto the stream; returns when the next one is due (or None)."""
        moved, next_due = await self._move_due(keys=[self.keys.delayed, self.keys.stream], args=[time.time(), limit])
        if int(moved) >= limit:
            return time.time()
        return float(next_due) if next_due else None

    # --- receiving ---------------------------------------------------------------------------------

    @staticmethod
    def _deliveries(entries: Any) -> list[Delivery]:
        out = []
        for entry_id, fields in entries or []:
            if fields and b"data" in fields:  # an entry deleted while pending comes back empty
                out.append(Delivery(entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields[b"data"]))
        return out

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """New entries for this consumer (waits up to block_ms)."""
        fetched = await self.redis.xreadgroup(
            self.keys.group, self.consumer, {self.keys.stream: ">"}, count=count, block=block_ms
        )
        if not fetched:
            return []
        streams: Any = fetched
        return self._deliveries(streams[0][1])

    async def reclaim(self, count: int) -> list[Delivery]:
        """Entries whose lease lapsed (their worker died), now this consumer's."""
        reply = await self.redis.xautoclaim(
            self.keys.stream, self.keys.group, self.consumer, min_idle_time=self.lease_ms, count=count
        )
        return self._deliveries(reply[1])

    async def extend(self, entry_ids: Sequence[str]) -> None:
        """Renew the lease on entries this worker still holds."""
        await self._claim(entry_ids, idle_ms=None)

    async def release(self, entry_ids: Sequence[str]) -> None:
        """Give entries back at once (a stopping worker): any worker's next reclaim takes them."""
        await self._claim(entry_ids, idle_ms=self.lease_ms * 1000)

    async def _claim(self, entry_ids: Sequence[str], idle_ms: int | None) -> None:
        """XCLAIM to this consumer, setting the entries' idle time (0 when None: a fresh lease)."""
        if entry_ids:
            await self.redis.xclaim(
                self.keys.stream,
                self.keys.group,
                self.consumer,
                min_idle_time=0,
                message_ids=list(entry_ids),
                idle=idle_ms,
                justid=True,
            )

    async def ack(self, entry_ids: Sequence[str]) -> None:
        """Acknowledge and delete finished entries, so the stream stays small."""
        if entry_ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(self.keys.stream, self.keys.group, *entry_ids)
                pipe.xdel(self.keys.stream, *entry_ids)
                await pipe.execute()

    async def listen(self) -> AsyncGenerator[bytes | AckableMessage, None]:
        """taskiq's receiver interface (our Worker reads in batches with leases instead)."""
        while True:
            for delivery in await self.read(count=10, block_ms=1000):

                async def ack(entry_id: str = delivery.entry_id) -> None:
                    await self.ack([entry_id])

                yield AckableMessage(data=delivery.data, ack=ack)

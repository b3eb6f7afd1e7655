"""Group sending for enqueues: the XADDs of concurrent enqueues go to Redis in one pipeline.

One pipeline per `enqueue()` costs a connection checkout, a round trip and redis-py's pipeline machinery
each time; under load (an HTTP function enqueueing for 64 connections at once) that is most of an
enqueue's Redis cost. Sends made during one loop turn, or while the previous pipeline is in flight, share
one. Each caller waits for its own entries and gets its own outcome: the pipeline runs with
`raise_on_error=False`, so an error on one caller's XADD fails that caller alone, while a lost connection
fails everyone in the pipeline (as it would have failed each of them alone).

A pipeline takes its connection before it writes anything, so "Redis could not be reached" (`NotSent`:
nothing was written, the messages are certainly not in Redis) is told apart from a failure after the
write (the answer was lost: they may be there). The last error alone cannot tell: where redis-py
retries (a Sentinel client does, by default), "connection refused" may follow a write that landed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

MAX_ENTRIES = 1000  # XADDs per pipeline

Waiting = tuple[str, Sequence[bytes], "asyncio.Future[None]"]


class NotSent(RedisConnectionError):
    """Redis could not be reached before anything was written: the commands certainly did not run."""


async def connect(pipe: Any) -> None:
    """Give a pipeline its connection now, before it writes; `NotSent` if none can be had. A pooled
    connection the server has closed (it died) is replaced first: redis-py 8 skips that check when
    maintenance notifications are on, and a write into it would leave its outcome unknown. A cluster's
    pipeline picks its nodes itself: there, every failure stays one whose outcome is unknown."""
    pool = getattr(pipe, "connection_pool", None)
    if pool is None or getattr(pipe, "connection", None) is not None:
        return
    try:
        connection = await pool.get_connection()
    except (RedisError, OSError) as exc:
        raise NotSent(str(exc) or type(exc).__name__) from exc
    pipe.connection = connection  # the pipeline's reset() hands it back
    try:
        stale = await connection.can_read()  # at EOF, or holding a reply nobody read
    except (RedisError, OSError):
        stale = True
    if stale:
        await connection.disconnect()
        try:
            await connection.connect()
        except (RedisError, OSError) as exc:
            raise NotSent(str(exc) or type(exc).__name__) from exc


class StreamSends:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.waiting: list[Waiting] = []
        self.sending: asyncio.Task[None] | None = None

    async def send(self, stream: str, messages: Sequence[bytes]) -> None:
        """XADD each message to the stream, with whatever other enqueues are sending now."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((stream, messages, future))
        if self.sending is None or self.sending.done():
            self.sending = asyncio.create_task(self._send())
        await future

    async def _send(self) -> None:
        batch: list[Waiting] = []
        try:
            await asyncio.sleep(0)  # let this loop turn's other enqueues join
            while self.waiting:
                batch, size = [], 0
                while self.waiting and (not batch or size + len(self.waiting[0][1]) <= MAX_ENTRIES):
                    batch.append(self.waiting.pop(0))
                    size += len(batch[-1][1])
                await self._pipeline(batch)
        except BaseException:  # cancelled (the loop is closing): no caller may wait forever
            for _, _, future in batch + self.waiting:
                future.cancel()
            self.waiting.clear()
            raise

    async def _pipeline(self, batch: list[Waiting]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, messages, _ in batch:
                    for message in messages:
                        pipe.xadd(stream, {b"data": message})
                await connect(pipe)
                results = await pipe.execute(raise_on_error=False)
        except NotSent as exc:  # and those waiting behind it are not tried against a Redis that is down
            for _, _, future in batch + self.waiting:
                _settle(future, exc)
            self.waiting.clear()
            return
        except Exception as exc:
            for _, _, future in batch:
                _settle(future, exc)
            return
        at = 0
        for _, messages, future in batch:
            mine = results[at : at + len(messages)]
            at += len(messages)
            _settle(future, next((r for r in mine if isinstance(r, Exception)), None))


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)

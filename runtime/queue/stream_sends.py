"""Sending for enqueues: their XADDs go out on one connection held for them, packed from a template.

A caller alone (nothing else in flight) writes its XADD at once, does its other work (the run's record)
while Redis answers, and reads the reply itself: one round trip, no task, no future. Callers that come
while a send is in flight wait for the next batch, sent by a task in one write: sends made during one loop
turn, or while the previous batch is in flight, share one. Each caller gets its own outcome: an error reply
to one caller's XADD fails that caller alone, while a lost connection fails everyone in the batch (as it
would have failed each of them alone). Without redis-py's pool and command machinery per send, an XADD
costs about 26 µs of CPU here instead of about 60 (`redis.xadd`), more through a pipeline. A Redis Cluster
client keeps its pipeline (it picks the nodes), and so does tracing (redis-py's instrumentation shows the
pipeline as a span).

The connection is made ready before anything is written, so "Redis could not be reached" (`NotSent`:
nothing was written, the messages are certainly not in Redis) is told apart from a failure after the
write (the answer was lost: they may be there). Nothing is retried after a write: where redis-py retries
(a Sentinel client does, by default), a retry could add a message twice.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Sequence
from typing import Any

from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runtime.queue.held_connection import NotSent, fresh, usable, write

MAX_ENTRIES = 1000  # XADDs per pipeline

Waiting = tuple[str, Sequence[bytes], "asyncio.Future[None]"]
__all__ = ["NotSent", "Sent", "StreamSends", "connect"]


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
    await fresh(connection)


async def _replies(connection: Any, count: int) -> list[Any]:
    """The next `count` replies on the connection; an error reply is returned as its ResponseError.

    redis-py reads each reply under a timeout of its own (the connection's socket timeout), a timer made and
    cancelled per reply: a third of a bulk enqueue's reading. Many replies are read under one timer, moved on
    as replies come, so no wait for a reply is cut short of 90% of the socket timeout; it raises as redis-py's
    read does, with the connection dropped."""
    results: list[Any] = []
    if count == 1:
        try:
            results.append(await connection.read_response())
        except ResponseError as exc:  # read whole: the connection stays in step
            results.append(exc)
        return results
    limit = connection.socket_timeout
    loop = asyncio.get_running_loop()
    reader = _hiredis_reader(connection)
    try:
        async with asyncio.timeout(None) as timer:
            moved = -math.inf
            while len(results) < count:
                now = loop.time()
                if limit and now - moved > limit / 10:
                    timer.reschedule(now + limit)
                    moved = now
                if reader is not None:
                    await _take(connection, reader, results, count)  # what has come, then one read more
                    continue
                try:
                    results.append(await connection.read_response(timeout=math.inf))  # under `timer`
                except ResponseError as exc:
                    results.append(exc)
    except TimeoutError:  # `timer`'s (a read cut short has dropped the connection, as redis-py's timeout does)
        raise RedisTimeoutError(f"Timeout reading {count} replies from Redis") from None
    return results


def _hiredis_reader(connection: Any) -> Any:
    """The connection's hiredis reader, when replies may be taken from it directly: redis-py's hiredis parser, on
    RESP2, or on RESP3 with a hiredis that marks push messages (handed to the parser, as redis-py's read does). A
    bulk's thousand XADD replies cost ~3.5 µs each through `read_response` (its timeout, health and push checks per
    reply), a fraction of that from the reader."""
    parser = getattr(connection, "_parser", None)
    if type(parser) is not _AsyncHiredisParser:
        return None
    if str(getattr(connection, "protocol", 2)) not in ("2", "None") and parser._hiredis_PushNotificationType is None:
        return None
    return parser._reader


async def _take(connection: Any, reader: Any, results: list[Any], count: int) -> None:
    """Append the replies the reader holds (up to `count` in all; an error reply as its ResponseError), then, if
    more are due, feed it what the socket has. As redis-py's read: a push message goes to the parser's handler, a
    ConnectionError reply (LOADING) is raised, and anything raised (a lost connection, a cancelled read) drops the
    connection."""
    parser = connection._parser
    push = parser._hiredis_PushNotificationType
    try:
        while len(results) < count:
            reply = reader.gets()
            if reply is NOT_ENOUGH_DATA:
                await parser.read_from_socket()
                return
            if isinstance(reply, RedisConnectionError):
                raise reply
            if push is not None and isinstance(reply, push):
                await parser.handle_push_response(reply)
                continue
            results.append(reply)
    except OSError as exc:
        await connection.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while reading from Redis: {exc.args}") from None
    except BaseException:
        await connection.disconnect(nowait=True)
        raise


class Sent:
    """A caller's messages on their way: written on the held connection (their replies are read by `finish`),
    or waiting for the next batch (`future`)."""

    __slots__ = ("count", "future")

    def __init__(self, count: int, future: asyncio.Future[None] | None) -> None:
        self.count = count
        self.future = future


class StreamSends:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.conn: Any = None  # the connection enqueues send on, held out of `pool`
        self.pool: Any = None
        self.pid = 0  # the process that holds `conn`
        self.busy = False  # a send is in flight on `conn` (a caller's own, or the batch task's)
        self.waiting: list[Waiting] = []
        self.sending: asyncio.Task[None] | None = None
        self.heads: dict[str, bytes] = {}  # stream -> the packed `XADD stream * data` before each message

    async def send(self, stream: str, messages: Sequence[bytes]) -> None:
        """XADD each message to the stream, with whatever other enqueues are sending now."""
        await self.finish(await self.start(stream, messages))

    async def start(self, stream: str, messages: Sequence[bytes]) -> Sent:
        """Write the messages now if nothing else is in flight (the caller may do other work, then read the
        replies with `finish`), else queue them for the next batch. `NotSent` if Redis cannot be reached."""
        if not self.busy and not self.waiting and self._held():
            self.busy = True
            try:
                conn = await self._connection()
                await write(conn, self._packed(stream, messages))
            except BaseException:
                self._idle()
                raise
            return Sent(len(messages), None)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((stream, messages, future))
        if not self.busy:
            self.busy = True
            self.sending = asyncio.create_task(self._send())
        return Sent(len(messages), future)

    async def finish(self, sent: Sent) -> None:
        """The outcome of `start`'s messages: returns once Redis took them all, or raises the first error."""
        if sent.future is not None:
            await sent.future
            return
        try:
            results = await _replies(self.conn, sent.count)
        finally:
            self._idle()
        error = next((r for r in results if isinstance(r, Exception)), None)
        if error is not None:
            raise error

    def _idle(self) -> None:
        """The held connection is free: the batch task takes whatever queued meanwhile."""
        self.busy = bool(self.waiting)
        if self.waiting:
            self.sending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        batch: list[Waiting] = []
        try:
            await asyncio.sleep(0)  # let this loop turn's other enqueues join
            while self.waiting:
                batch, size = [], 0
                while self.waiting and (not batch or size + len(self.waiting[0][1]) <= MAX_ENTRIES):
                    batch.append(self.waiting.pop(0))
                    size += len(batch[-1][1])
                await self._batch(batch)
        except BaseException:  # cancelled (the loop is closing): no caller may wait forever
            for _, _, future in batch + self.waiting:
                future.cancel()
            self.waiting.clear()
            raise
        finally:
            self.busy = False

    async def _batch(self, batch: list[Waiting]) -> None:
        try:
            if not self._held():
                results = await self._pipeline(batch)
            else:
                conn = await self._connection()
                await write(conn, [part for stream, messages, _ in batch for part in self._packed(stream, messages)])
                results = await _replies(conn, sum(len(messages) for _, messages, _ in batch))
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

    async def _pipeline(self, batch: list[Waiting]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, messages, _ in batch:
                for message in messages:
                    pipe.xadd(stream, {b"data": message})
            await connect(pipe)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            return results

    def _held(self) -> bool:
        """Whether sends go on the held connection: not to a cluster (its pipeline picks the nodes), nor while
        tracing (redis-py's instrumented pipeline shows them as spans)."""
        return usable(self.redis)

    async def _connection(self) -> Any:
        """The held connection, connected and with nothing left to read; `NotSent` if Redis cannot be reached."""
        pool = self.redis.connection_pool
        if self.conn is None or self.pool is not pool or self.pid != os.getpid():  # a forked child: its own
            self.conn, self.pool, self.heads, self.pid = None, pool, {}, os.getpid()
            try:
                self.conn = await pool.get_connection()  # never released: enqueues keep it until the pool closes
            except (RedisError, OSError) as exc:
                raise NotSent(str(exc) or type(exc).__name__) from exc
        await fresh(self.conn)
        return self.conn

    def _packed(self, stream: str, messages: Sequence[bytes]) -> list[bytes]:
        head = self.heads.get(stream)
        if head is None:
            key = self.conn.encoder.encode(stream)
            head = self.heads[stream] = b"*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$4\r\ndata\r\n" % (len(key), key)
        parts: list[bytes] = []
        for message in messages:
            parts += (head, b"$%d\r\n" % len(message), message, b"\r\n")
        return parts


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)

"""A connection held out of a client's pool, for commands packed by hand and sent one at a time.

redis-py's path for one command (the pool's checkout and release, the retry wrapper, packing each argument,
a response callback) is most of a call's CPU. A command packed from a template built once and written on a
connection kept for it skips all that; the reply is read by the connection's own parser (hiredis), so its
errors, a Sentinel master turned replica, and a lost connection surface as redis-py's would.

The connection is made ready before anything is written, so "Redis could not be reached" (`NotSent`: nothing
was written, the command certainly did not run) is told apart from a failure after the write (the reply was
lost: it may have run). Nothing is retried after a write. A connection that broke is replaced on the next
call; one left waiting for a reply (its caller was cancelled) is closed by redis-py, and replaced too.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError, ResponseError

from runtime import tracing


class NotSent(RedisConnectionError):
    """Redis could not be reached before anything was written: the commands certainly did not run."""


def bulk(value: bytes) -> bytes:
    """One argument in Redis's protocol."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def packed(*args: bytes) -> list[bytes]:
    """A whole command in Redis's protocol."""
    return [b"*%d\r\n" % len(args), *map(bulk, args)]


async def fresh(connection: Any) -> None:
    """Ready a connection to write on: connected, at no EOF and holding no unread reply (one found so is
    replaced); `NotSent` if that fails."""
    try:
        stale = connection.is_connected and await connection.can_read()
    except (RedisError, OSError):
        stale = True
    try:
        if stale:
            await connection.disconnect()
        if not connection.is_connected:
            await connection.connect()
    except (RedisError, OSError) as exc:
        raise NotSent(str(exc) or type(exc).__name__) from exc


async def write(connection: Any, parts: list[bytes]) -> None:
    """Write on the connection: straight into its transport when that takes it all at once (redis-py's own
    send waits for it under a timeout, which costs a task per write), else as redis-py writes, waiting for
    the transport to drain within its socket timeout."""
    writer = getattr(connection, "_writer", None)
    if writer is None or writer.transport.get_write_buffer_size():
        await connection.send_packed_command(parts, check_health=False)
        return
    writer.writelines(parts)
    if writer.transport.get_write_buffer_size():  # not all of it went out: wait as redis-py would
        await connection.send_packed_command([], check_health=False)


def usable(redis: Any) -> bool:
    """Whether commands to this client may go on a held connection: not to a cluster (redis-py picks the
    nodes), nor while tracing (redis-py's instrumentation shows each command as a span)."""
    return getattr(redis, "connection_pool", None) is not None and not tracing.enabled()


class HeldConnection:
    """One connection of a client's pool, kept (never given back) for commands sent one at a time: each
    caller's reply is the next one read."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.conn: Any = None
        self.pool: Any = None
        self.pid = 0  # the process that holds `conn`
        self.lock = asyncio.Lock()

    async def call(self, parts: list[bytes]) -> Any:
        """Send one packed command and return its reply (an error reply is raised, as redis-py does)."""
        async with self.lock:
            connection = await self.connection()
            await write(connection, parts)
            try:
                return await connection.read_response()
            except ResponseError as exc:
                # a replica refused a script's write (Redis < 7 wraps READONLY in a script error that redis-py's
                # Sentinel connection does not catch): its master was demoted by a failover. Connecting again
                # asks Sentinel for the new one; redis-py's pool does so for idle connections, never for this.
                if isinstance(exc, ReadOnlyError) or "READONLY" in str(exc):
                    await connection.disconnect()
                raise

    async def evalsha(self, script: Any, parts: list[bytes]) -> Any:
        """Send a packed EVALSHA of `script` (redis-py's `Script`); if Redis lost the script (restarted,
        SCRIPT FLUSH), load it and send again, as redis-py's `Script` does."""
        try:
            return await self.call(parts)
        except NoScriptError:
            source = script.script
            await self.call(packed(b"SCRIPT", b"LOAD", source.encode() if isinstance(source, str) else source))
            return await self.call(parts)

    async def connection(self) -> Any:
        """The held connection, connected and with nothing left to read; `NotSent` if Redis cannot be reached."""
        pool = self.redis.connection_pool
        if self.conn is None or self.pool is not pool or self.pid != os.getpid():  # a forked child: its own
            self.conn, self.pool, self.pid = None, pool, os.getpid()
            try:
                self.conn = await pool.get_connection()  # never released: kept until the pool closes
            except (RedisError, OSError) as exc:
                raise NotSent(str(exc) or type(exc).__name__) from exc
        await fresh(self.conn)
        return self.conn

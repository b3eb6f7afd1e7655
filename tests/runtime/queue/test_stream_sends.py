"""Group sending: the XADDs of concurrent enqueues share one pipeline, and each caller gets its own outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runtime.queue.stream_sends import StreamSends


async def test_concurrent_sends_share_one_write_and_every_entry_arrives_in_order(redis_url):
    redis = Redis.from_url(redis_url)
    sends = StreamSends(redis)
    writes = 0
    connection = sends._connection

    async def counted() -> Any:
        nonlocal writes
        writes += 1
        return await connection()

    sends._connection = counted  # type: ignore[method-assign]
    try:
        await asyncio.gather(*[sends.send("s", [f"{i}-a".encode(), f"{i}-b".encode()]) for i in range(100)])
        entries = [fields[b"data"].decode() for _, fields in await redis.xrange("s")]
        assert len(entries) == 200 and 1 <= writes <= 3, writes  # the first caller alone, then one batch
        for i in range(100):  # one caller's entries keep their order
            assert entries.index(f"{i}-a") < entries.index(f"{i}-b")
    finally:
        await redis.aclose()


async def test_a_caller_alone_sends_without_a_task_on_one_held_connection(redis_url):
    redis = Redis.from_url(redis_url)
    sends = StreamSends(redis)
    try:
        tasks = len(asyncio.all_tasks())
        sent = await sends.start("s", [b"1", b"2"])
        assert sent.future is None and len(asyncio.all_tasks()) == tasks  # written now, by the caller
        await sends.finish(sent)
        held = sends.conn
        await sends.send("s", [b"3"])
        assert sends.conn is held and not sends.busy
        assert [f[b"data"] for _, f in await redis.xrange("s")] == [b"1", b"2", b"3"]
    finally:
        await redis.aclose()


async def test_a_caller_cancelled_before_reading_leaves_the_connection_in_step(redis_url):
    redis = Redis.from_url(redis_url)
    await redis.set("not-a-stream", "x")
    sends = StreamSends(redis)
    try:
        await redis.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # its reply comes after the cancel
        sent = await sends.start("s", [b"1"])
        task = asyncio.ensure_future(sends.finish(sent))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not sends.busy
        with pytest.raises(ResponseError, match="WRONGTYPE"):  # the next reply read is this send's own
            await sends.send("not-a-stream", [b"2"])
        await sends.send("s", [b"3"])
        assert await redis.xlen("s") in (1, 2)  # the cancelled one's XADD may have run
    finally:
        await redis.aclose()


async def test_an_error_on_one_callers_entries_fails_that_caller_alone(redis_url):
    redis = Redis.from_url(redis_url)
    await redis.set("not-a-stream", "x")  # XADD to it: WRONGTYPE
    sends = StreamSends(redis)
    try:
        outcomes = await asyncio.gather(
            sends.send("s", [b"1"]), sends.send("not-a-stream", [b"2"]), sends.send("s", [b"3"]), return_exceptions=True
        )
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], ResponseError) and "WRONGTYPE" in str(outcomes[1])
        assert await redis.xlen("s") == 2
    finally:
        await redis.aclose()


async def test_a_lost_connection_fails_every_caller_of_the_pipeline_and_the_next_send_works(redis_url):
    redis = Redis.from_url(redis_url)
    sends = StreamSends(redis)
    broken = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    sends.redis = broken
    try:
        outcomes = await asyncio.gather(*[sends.send("s", [b"x"]) for _ in range(3)], return_exceptions=True)
        assert all(isinstance(o, Exception) for o in outcomes), outcomes
        sends.redis = redis
        await sends.send("s", [b"y"])
        assert await redis.xlen("s") == 1
    finally:
        await broken.aclose()
        await redis.aclose()


@pytest.mark.parametrize("n", [1, 1500])
async def test_a_big_send_is_not_split_and_a_batch_stays_bounded(redis_url, n):
    redis = Redis.from_url(redis_url)
    sends = StreamSends(redis)
    try:
        await asyncio.gather(sends.send("s", [b"m"] * n), sends.send("s", [b"last"]))
        assert await redis.xlen("s") == n + 1
    finally:
        await redis.aclose()


async def test_many_replies_read_together_keep_the_socket_timeout_and_the_next_send_works(redis_url):
    """A send of many entries reads their replies under one timer: a Redis that does not answer still fails it
    with redis-py's TimeoutError after the socket timeout, and the connection is replaced for the next send."""
    redis = Redis.from_url(redis_url, socket_timeout=0.3)
    sends = StreamSends(redis)
    try:
        await redis.execute_command("CLIENT", "PAUSE", 5000, "WRITE")  # the replies would come after it
        with pytest.raises(RedisTimeoutError):
            await sends.send("s", [b"m"] * 50)
        await redis.execute_command("CLIENT", "UNPAUSE")
        await sends.send("s", [b"after"] * 3)
        entries = [f[b"data"] for _, f in await redis.xrange("s")]
        assert entries[-3:] == [b"after"] * 3
    finally:
        await redis.aclose()


async def test_a_connection_lost_while_many_replies_are_read_fails_the_send_and_the_next_send_works(redis_url):
    """Many replies are taken from the connection's hiredis reader as they come: a connection the server closes
    mid-way fails the send with redis-py's ConnectionError and is dropped, so the next send connects again."""
    redis = Redis.from_url(redis_url)
    admin = Redis.from_url(redis_url)
    sends = StreamSends(redis)
    try:
        await admin.execute_command("CLIENT", "PAUSE", 5000, "WRITE")  # the replies would come after it
        sending = asyncio.ensure_future(sends.send("s", [b"m"] * 200))
        await asyncio.sleep(0.1)
        await admin.execute_command("CLIENT", "KILL", "ID", await _held_client_id(admin, sends))
        with pytest.raises(RedisConnectionError):
            await sending
        await admin.execute_command("CLIENT", "UNPAUSE")
        await sends.send("s", [b"after"] * 3)
        assert [f[b"data"] for _, f in await redis.xrange("s")][-3:] == [b"after"] * 3
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
        await redis.aclose()


async def test_error_replies_among_many_are_each_callers_own(redis_url):
    redis = Redis.from_url(redis_url)
    await redis.set("not-a-stream", "x")
    sends = StreamSends(redis)
    try:
        await redis.execute_command("CLIENT", "PAUSE", 200, "WRITE")  # the replies come together, after it
        outcomes = await asyncio.gather(
            sends.send("s", [b"a"] * 700),
            sends.send("not-a-stream", [b"b"] * 300),
            sends.send("s", [b"c"] * 500),
            return_exceptions=True,
        )
        assert outcomes[0] is None and outcomes[2] is None, outcomes
        assert isinstance(outcomes[1], ResponseError) and "WRONGTYPE" in str(outcomes[1])
        assert await redis.xlen("s") == 1200
        await sends.send("s", [b"last"])
        assert await redis.xlen("s") == 1201
    finally:
        await redis.aclose()


async def _held_client_id(admin: Redis, sends: StreamSends) -> int:
    """The Redis client id of the connection the sends hold (the one connection that is not `admin`'s)."""
    mine = await admin.client_id()
    clients = [c for c in await admin.client_list() if int(c["id"]) != mine]
    assert len(clients) == 1, clients
    return int(clients[0]["id"])


async def test_push_messages_between_many_replies_are_not_taken_for_replies(redis_url):
    """On RESP3 (redis-py 8's default) Redis may push a message between replies (here: client tracking's
    invalidation of a key the connection read, pushed as the batch's first XADD changes it); it goes to redis-py's
    handler, and each caller of a batch still gets its own replies."""
    redis = Redis.from_url(redis_url, protocol=3)
    await redis.set("not-a-stream", "x")
    sends = StreamSends(redis)
    try:
        await sends.send("other", [b"first"])  # the held connection, made
        assert sends.conn is not None
        await sends.conn.send_command("CLIENT", "TRACKING", "ON")
        assert await sends.conn.read_response() in (b"OK", "OK")
        await sends.conn.send_command("XLEN", "s")  # tracked: its next change pushes an invalidation here
        assert await sends.conn.read_response() == 0
        await redis.execute_command("CLIENT", "PAUSE", 200, "WRITE")  # the replies come together, after it
        outcomes = await asyncio.gather(
            sends.send("other", [b"alone"]),  # the caller alone: the three below wait, then go in one batch
            sends.send("s", [b"a"] * 300),
            sends.send("not-a-stream", [b"b"] * 2),
            sends.send("s", [b"c"] * 300),
            return_exceptions=True,
        )
        assert outcomes[0] is None and outcomes[1] is None and outcomes[3] is None, outcomes
        assert isinstance(outcomes[2], ResponseError) and "WRONGTYPE" in str(outcomes[2]), outcomes
        await sends.send("s", [b"last"])
        assert await redis.xlen("s") == 601
    finally:
        await redis.aclose()

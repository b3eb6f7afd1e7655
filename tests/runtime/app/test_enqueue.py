"""Enqueue: bad arguments and delays are errors naming the argument; the answer is the truth when Redis
or the database fails half-way."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator

import pytest

from runtime.app.connections import Runtime
from runtime.errors import ArgumentsError, EnqueueFailed, EnqueueUncertain
from runtime.settings import Settings
from runtime.store.runs import RunStore
from tests.conftest import write_app

MODULE = f"enq_{uuid.uuid4().hex[:8]}"


def make_app(tmp_path):  # type: ignore[no-untyped-def]
    return write_app(
        tmp_path,
        f"""
app: enqueue-test
functions:
  generate: {{handler: "{MODULE}:generate", task: {{}}}}
  anything: {{handler: "{MODULE}:anything", task: {{}}}}
""",
        {
            f"{MODULE}.py": (
                "from typing import Any\n"
                "from runtime import task\n"
                "@task\nasync def generate(briefing_id: int) -> None: ...\n"
                "@task\nasync def anything(value: Any = None, number: float = 0.0) -> None: ...\n"
            )
        },
    )


@pytest.fixture
async def rt(tmp_path, redis_url):  # type: ignore[no-untyped-def]
    settings = Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db", max_arguments_size=10_000)
    async with Runtime.from_manifest(make_app(tmp_path), settings) as runtime:
        yield runtime


@pytest.mark.parametrize(
    ("function", "kwargs", "message"),
    [
        ("generate", {"briefing_id": 10**100}, "briefing_id: integer out of range (must fit in 64 bits)"),
        ("anything", {"value": [1, {"x": 2**64}]}, "value.1.x: integer out of range (must fit in 64 bits)"),
        ("anything", {"number": float("inf")}, "number: inf is not a finite number"),
        ("anything", {"value": float("nan")}, "value: nan is not a finite number"),
        ("anything", {"value": object()}, "value: cannot be sent as JSON"),
        ("anything", {"value": b"\xff"}, "value: cannot be sent as JSON"),
        ("anything", {"value": "\ud800"}, "value: text is not valid Unicode"),
        ("anything", {"value": "x" * 20_000}, "value: too large (20002 bytes as JSON; all arguments may take "),
    ],
)
async def test_bad_arguments_name_the_argument(rt, function, kwargs, message):  # type: ignore[no-untyped-def]
    with pytest.raises(ArgumentsError) as caught:
        await rt.app.tasks[function].enqueue(**kwargs)
    assert f"bad arguments for '{function}': {message}" in str(caught.value)
    assert await rt.store.list() == [] and await rt.broker.redis.xlen(rt.keys.queue("default").stream) == 0


@pytest.mark.parametrize(
    ("function", "kwargs", "message"),
    [
        ("generate", {"briefing_id": "x"}, "briefing_id: Input should be a valid integer"),
        ("generate", {"briefing_id": 1, "other": 2}, "other: unexpected argument"),
        ("anything", {"value": [1, {"x": 2**64}]}, "value.1.x: integer out of range (must fit in 64 bits)"),
        ("anything", {"value": float("nan")}, "value: nan is not a finite number"),
        ("anything", {"value": b"\xff"}, "value: cannot be sent as JSON"),
        ("anything", {"value": "\ud800"}, "value: text is not valid Unicode"),
        ("anything", {"value": functools.reduce(lambda inner, _: [inner], range(101), 1)}, "nested more than 100"),
    ],
)
async def test_a_bad_item_of_a_bulk_enqueue_is_named_as_alone_and_nothing_is_queued(rt, function, kwargs, message):  # type: ignore[no-untyped-def]
    good = {"briefing_id": 1} if function == "generate" else {"value": 1}
    with pytest.raises(ArgumentsError) as alone:
        await rt.app.tasks[function].enqueue(**kwargs)
    with pytest.raises(ArgumentsError) as caught:
        await rt.app.tasks[function].enqueue_many([good] * 50 + [kwargs] + [good] * 50)
    assert str(caught.value) == str(alone.value) and message in str(alone.value)
    assert str(alone.value).startswith(f"bad arguments for '{function}': ")
    assert await rt.store.list() == [] and await rt.broker.redis.xlen(rt.keys.queue("default").stream) == 0


async def test_a_bulk_enqueue_records_the_arguments_each_alone_would(rt):  # type: ignore[no-untyped-def]
    items = [{"value": {"n": i, "at": [1.5, None, "é"]}, "number": i} for i in range(60)]
    ids = await rt.app.tasks["anything"].enqueue_many(items)
    runs = await rt.store.get_many(ids)
    assert [runs[run_id].arguments for run_id in ids] == [
        {"value": kw["value"], "number": float(kw["number"])} for kw in items
    ]


@pytest.mark.parametrize(
    ("delay", "message"),
    [
        ("10", "delay: must be a number of seconds, not str '10'"),
        (True, "delay: must be a number of seconds, not bool 'True'"),
        (float("inf"), "delay: must be from 0 to 31622400 seconds (a year), not inf"),
        (float("nan"), "delay: must be from 0 to 31622400 seconds (a year), not nan"),
        (1e12, "delay: must be from 0 to 31622400 seconds (a year), not 1000000000000.0"),
        (10**400, "delay: must be from 0 to 31622400 seconds (a year), not 100000000000..."),
        (-1, "delay: must be from 0 to 31622400 seconds (a year), not -1"),
    ],
)
async def test_bad_delays_name_delay(rt, delay, message):  # type: ignore[no-untyped-def]
    with pytest.raises(ArgumentsError) as caught:
        await rt.app.tasks["generate"].with_options(delay=delay).enqueue(briefing_id=1)
    assert str(caught.value) == message


async def test_a_refused_message_leaves_no_record(rt):  # type: ignore[no-untyped-def]
    # the stream key holds a string: Redis answers XADD with an error, so nothing is queued
    await rt.broker.redis.delete(rt.keys.queue("default").stream)
    await rt.broker.redis.set(rt.keys.queue("default").stream, "not a stream")
    with pytest.raises(EnqueueFailed, match="nothing was queued for 'generate': Redis refused: ResponseError"):
        await rt.app.tasks["generate"].enqueue(briefing_id=1)
    assert await rt.store.list() == []


async def test_an_enqueue_redis_cannot_take_returns_its_id_and_the_record_waits_unsent(tmp_path, redis_url):  # type: ignore[no-untyped-def]
    from runtime.store.outbox import UNSENT
    from tests.conftest import RedisServer

    server = RedisServer(tmp_path / "redis")
    settings = Settings(redis_url=server.url, database_url=f"sqlite:///{tmp_path}/r.db")
    runtime = Runtime.from_manifest(make_app(tmp_path), settings)
    await runtime.start()
    server.stop()  # Redis goes away: connection refused, nothing is sent
    await asyncio.sleep(0.1)  # the pooled connection sees the server gone
    run_id = await runtime.app.tasks["generate"].enqueue(briefing_id=1)
    run = await runtime.store.get(run_id)
    assert run is not None and run.status == "queued" and run.version == UNSENT  # sent by the scheduler's outbox
    await runtime.store.close()


async def test_an_answer_lost_after_the_write_is_uncertain_and_the_record_stays(tmp_path):  # type: ignore[no-untyped-def]
    """A proxy passes the XADD to Redis, then drops the connection before the answer: the message is in
    Redis, so the enqueue is uncertain (never kept for the outbox, which would send it again)."""
    from tests.conftest import RedisServer, free_port

    server = RedisServer(tmp_path / "redis")
    cut = asyncio.Event()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", server.port)
        lost = asyncio.Event()  # this connection carried an XADD: no answer goes back any more

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, upward: bool) -> None:
            while data := await source.read(65536):
                if upward and cut.is_set() and b"XADD" in data:
                    lost.set()
                if upward or not lost.is_set():
                    sink.write(data)
                    await sink.drain()
                if lost.is_set() and upward:
                    await asyncio.sleep(0.2)  # Redis has it; its answer never comes back
                    writer.transport.abort()
                    return

        await asyncio.wait(
            [asyncio.create_task(pump(reader, up_writer, True)), asyncio.create_task(pump(up_reader, writer, False))],
            return_when=asyncio.FIRST_COMPLETED,
        )
        writer.close()
        up_writer.close()

    port = free_port()
    proxy = await asyncio.start_server(relay, "127.0.0.1", port)
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", database_url=f"sqlite:///{tmp_path}/r.db")
    runtime = Runtime.from_manifest(make_app(tmp_path), settings)
    try:
        await runtime.start()
        cut.set()
        with pytest.raises(EnqueueUncertain, match="may still run") as caught:
            await runtime.app.tasks["generate"].enqueue(briefing_id=1)
    finally:
        proxy.close()
    [run_id] = caught.value.run_ids
    assert run_id in str(caught.value)
    run = await runtime.store.get(run_id)
    assert run is not None and run.status == "queued" and run.version == 0  # not in the outbox: never sent twice
    entries = server.client().xrange(runtime.keys.queue("default").stream)
    copies = [fields[b"data"] for _, fields in entries if run_id.encode() in fields[b"data"]]
    assert len(copies) == 1  # it landed, once: a lost answer is not sent again
    await runtime.store.close()
    server.stop()


async def test_with_redis_and_the_database_down_the_enqueue_fails_and_leaves_nothing(tmp_path):  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from runtime.errors import EnqueueUnavailable
    from tests.conftest import RedisServer

    server = RedisServer(tmp_path / "redis")
    settings = Settings(redis_url=server.url, database_url=f"sqlite:///{tmp_path}/r.db")
    runtime = Runtime.from_manifest(make_app(tmp_path), settings)
    await runtime.start()
    async with runtime.store.engine.begin() as conn:  # the database refuses the insert
        await conn.execute(text("ALTER TABLE runs RENAME TO runs_away"))
    server.stop()
    await asyncio.sleep(0.1)
    with pytest.raises(EnqueueUnavailable, match=r"Redis is unreachable .* and the run.s record could not be saved"):
        await runtime.app.tasks["generate"].enqueue(briefing_id=1)
    async with runtime.store.engine.begin() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM runs_away"))).scalar() == 0
    await runtime.store.close()


async def test_a_failed_record_insert_still_returns_the_queued_id(rt):  # type: ignore[no-untyped-def]
    async with rt.store.engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(text("DROP TABLE runs"))
    run_id = await rt.app.tasks["generate"].enqueue(briefing_id=1)  # the message is in Redis: it will run
    [(_, [(_, fields)])] = await rt.broker.redis.xread({rt.keys.queue("default").stream: "0"})
    assert run_id.encode() in fields[b"data"]


@contextlib.asynccontextmanager
async def counted_inserts(rt: Runtime) -> AsyncIterator[tuple[list[int], RunStore]]:
    """The sizes of the run store's inserts while it is open, and a second store to read records from."""
    inserts: list[int] = []
    insert = rt.store.insert_many

    async def counted(rows):  # type: ignore[no-untyped-def]
        inserts.append(len(rows))
        await insert(rows)

    rt.store.insert_many = counted  # type: ignore[method-assign]
    other = RunStore(rt.settings.database_url)
    try:
        yield inserts, other
    finally:
        rt.store.insert_many = insert  # type: ignore[method-assign]
        await other.close()


async def test_concurrent_enqueues_share_one_insert_and_each_record_is_saved_when_it_returns(rt):  # type: ignore[no-untyped-def]
    """Group commit: enqueues made at the same time write their records in one statement, yet each call
    returns only once its own record is saved (read at once from another connection)."""
    async with counted_inserts(rt) as (inserts, other):
        fn = rt.app.tasks["generate"]
        ids = await asyncio.gather(*[fn.enqueue(briefing_id=i) for i in range(100)])
        found = await other.get_many(list(ids))
        assert sorted(found) == sorted(ids)  # every record is there when its enqueue has returned
        assert 1 <= len(inserts) <= 3, f"{len(inserts)} INSERT statements for 100 concurrent enqueues"


async def test_a_record_that_cannot_be_saved_fails_only_its_own_enqueue_in_a_shared_batch(rt):  # type: ignore[no-untyped-def]
    """Fault injection: the database refuses any statement holding one run's row. The batch falls back to
    one insert per caller, so only that caller's record is missing; every other record is saved."""
    insert = rt.store.insert_many
    refused: list[str] = []

    async def refusing(rows):  # type: ignore[no-untyped-def]
        if any(row["arguments"]["briefing_id"] == 13 for row in rows):
            refused.append(rows[0]["id"])
            raise OSError("the database refused the row")
        await insert(rows)

    rt.store.insert_many = refusing
    fn = rt.app.tasks["generate"]
    ids = await asyncio.gather(*[fn.enqueue(briefing_id=i) for i in range(30)])
    assert len(ids) == 30  # every message is queued: the one whose record failed is recorded when it runs
    saved = await rt.store.get_many(list(ids))
    assert len(saved) == 29 and ids[13] not in saved


async def test_an_enqueue_alone_is_one_insert_and_one_xadd_with_no_task_and_its_record_is_there_when_it_returns(rt):  # type: ignore[no-untyped-def]
    """A caller alone writes its XADD, saves its record while Redis answers and reads the reply itself: no
    asyncio task is made for it, and another connection reads the record as soon as enqueue() returns."""
    fn = rt.app.tasks["generate"]
    await fn.enqueue(briefing_id=0)  # the held connection is made
    loop = asyncio.get_running_loop()
    tasks = []

    def factory(loop, coro, **kw):  # type: ignore[no-untyped-def]
        tasks.append(coro)
        return asyncio.Task(coro, loop=loop, **kw)

    async with counted_inserts(rt) as (inserts, other):
        for i in range(1, 20):
            loop.set_task_factory(factory)
            try:
                run_id = await fn.enqueue(briefing_id=i)
            finally:
                loop.set_task_factory(None)
            assert (await other.get(run_id)) is not None
        assert [t for t in tasks if "fold" not in repr(t)] == [] and inserts == [1] * 19
        assert await rt.broker.redis.xlen(rt.keys.queue("default").stream) == 20

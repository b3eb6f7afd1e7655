"""The run store on SQLite and on Postgres: records, filters, out-of-order updates, pruning."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid
from datetime import timedelta

from sqlalchemy import event

from runtime.app.connections import Runtime
from runtime.settings import Settings
from runtime.store.models import Run
from runtime.store.runs import RunStore
from runtime.store.values import utcnow
from runtime.worker.middleware.records import FINISHED, RUNNING, version


def run(run_id: str, function: str = "f", status: str = "queued") -> Run:
    return Run(id=run_id, function=function, arguments={"n": 1}, status=status, enqueued_at=utcnow())


async def test_records_filters_and_counts(database_url):
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.insert_many([run("a", "f"), run("b", "g"), run("c", "f", "failed")])
    assert {r.id for r in await store.list(function="f")} == {"a", "c"}
    assert [r.id for r in await store.list(status="failed")] == ["c"]
    assert len(await store.list(limit=2)) == 2
    assert await store.counts() == {"f": {"queued": 1, "failed": 1}, "g": {"queued": 1}}
    assert next(iter((await store.get("a")).public())) == "id"  # type: ignore[union-attr]
    assert await store.delete("b") and await store.get("b") is None
    await store.close()


async def test_a_search_finds_a_run_by_the_start_or_the_end_of_its_id(database_url):
    """Time-ordered ids of one moment share their first digits: the short id users see is the last 8."""
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    moment = uuid.uuid4().hex[:24]
    ids = [moment + uuid.uuid4().hex[:8] for _ in range(3)]
    await store.insert_many([run(run_id) for run_id in ids])
    for run_id in ids:
        assert [r.id for r in await store.find(search=run_id[-8:])] == [run_id]
        assert [r.id for r in await store.find(search=run_id)] == [run_id]
    assert {r.id for r in await store.find(search=moment)} == set(ids)
    assert await store.find(search=ids[0][-8:-1]) == []  # the end of an id, not its middle
    await store.close()


def state(run_id: str, status: str, phase: int, **more: object) -> dict[str, object]:
    """A worker's full-state update of a run, as the records middleware writes it."""
    return {
        "id": run_id,
        "function": "f",
        "arguments": {"n": 1},
        "max_attempts": 1,
        "enqueued_at": utcnow(),
        "status": status,
        "attempts": 1,
        "last_error": None,
        "started_at": utcnow(),
        "finished_at": None,
        "result": None,
        "history": [],
        "version": version(phase),
    } | more


async def test_an_older_update_never_overwrites_a_newer_one(database_url):
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.insert_many([run("a")])
    running = state("a", "running", RUNNING)
    done = state("a", "succeeded", FINISHED, finished_at=utcnow(), result={"ok": True})
    await store.update_many([done])
    await store.update_many([running])  # arrives late
    saved = await store.get("a")
    assert saved is not None and (saved.status, saved.result) == ("succeeded", {"ok": True})
    await store.close()


async def test_a_late_enqueue_insert_never_overwrites_the_workers_state(database_url):
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.update_many([state("a", "succeeded", FINISHED, finished_at=utcnow(), result=3)])  # worker first
    late = run("a")
    late.replay_of = "original"
    await store.insert_many([late])  # the enqueue's insert lands after it
    saved = await store.get("a")
    assert saved is not None and (saved.status, saved.result, saved.attempts) == ("succeeded", 3, 1)
    assert saved.replay_of == "original"  # what only the enqueue knows is kept
    await store.close()


async def test_prune_removes_old_succeeded_runs_only(database_url):
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    old = utcnow() - timedelta(days=2)
    await store.update_many(
        [
            state("old-ok", "succeeded", FINISHED, finished_at=old),
            state("old-failed", "failed", FINISHED, finished_at=old),
            state("new-ok", "succeeded", FINISHED, finished_at=utcnow()),
        ]
    )
    assert await store.prune(utcnow() - timedelta(days=1)) == ["old-ok"]
    assert {r.id for r in await store.list()} == {"old-failed", "new-ok"}
    await store.close()


async def test_runtime_tables_are_created_on_start(tmp_path, redis_url, database_url):
    from tests.conftest import write_app

    manifest = write_app(tmp_path, "app: empty\nfunctions: {}\n", {})
    runtime = Runtime.from_manifest(manifest, Settings(redis_url=redis_url, database_url=database_url))
    await runtime.start()
    await runtime.store.ping()
    assert await runtime.store.list() == []
    await runtime.stop()


async def test_the_fast_insert_writes_the_rows_the_engine_writes(database_url):
    """An enqueue's insert goes through the driver directly (sqlite3: runtime/store/sqlite_insert.py, asyncpg:
    runtime/store/postgres_insert.py); each column must be stored exactly as SQLAlchemy stores it, and its errors
    must be SQLAlchemy's types."""
    import pytest
    import sqlalchemy.exc
    from sqlalchemy import text

    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    assert store.fast_insert is not None
    when = utcnow()
    row = {
        "function": "f",
        "arguments": {"text": 'é ü 🎉 \\n "q"', "nested": [1, 2.5, None, {"k": True}]},
        "status": "scheduled",
        "attempts": 0,
        "max_attempts": 4,
        "last_error": None,
        "enqueued_at": when,
        "scheduled_for": when + timedelta(seconds=30),
        "started_at": None,
        "finished_at": None,
        "result": None,
        "history": [],
        "replay_of": "r0",
        "version": 0,
        "queue": "critical",
        "trace_id": "ab" * 16,
        "deadline": when + timedelta(minutes=5),
        "idempotency_key": "k1",
    }
    await store.insert_many([row | {"id": "fast"}])
    fast, store.fast_insert = store.fast_insert, None
    await store.insert_many([row | {"id": "engine"}])
    async with store.engine.connect() as conn:
        stored = {r[0]: r[1:] for r in (await conn.execute(text("SELECT * FROM runs ORDER BY id"))).all()}
    assert stored["fast"] == stored["engine"]
    saved = await store.get("fast")
    assert saved is not None and saved.arguments == row["arguments"] and saved.deadline == row["deadline"]

    store.fast_insert = fast
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        await store.insert_many([row | {"id": "bad", "function": None}])
    await store.insert_many([row | {"id": "after"}])  # the connection is still usable
    assert await store.get("after") is not None and await store.get("bad") is None
    await store.close()
    await store.close()  # closing twice is harmless


async def test_the_sqlite_fast_insert_gives_a_missing_column_its_default(tmp_path):
    store = RunStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")
    await store.init()
    row = {"id": "a", "function": "f", "arguments": {}, "status": "queued", "enqueued_at": utcnow(), "history": []}
    await store.insert_many([row])
    saved = await store.get("a")
    assert saved is not None and (saved.queue, saved.version, saved.attempts, saved.max_attempts) == (
        "default",
        0,
        0,
        1,
    )
    await store.close()


async def test_a_recorded_runs_big_arguments_are_not_resent_with_its_updates(database_url, monkeypatch):
    """A 1 MB argument is written once, at enqueue: the worker's updates of a recorded run carry only
    the columns they change (still version-guarded); a run not yet recorded gets its arguments."""
    from runtime.store import big_arguments

    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    blob = "x" * 1_000_000
    await store.insert_many([_big_run("a", blob)])
    sent: list[str] = []
    dumps = big_arguments.json_dumps

    def spy(value):  # type: ignore[no-untyped-def]
        text = dumps(value)
        sent.append(text)
        return text

    monkeypatch.setattr(big_arguments, "json_dumps", spy)  # what the worker's writes of big arguments send
    running = state("a", "running", RUNNING, arguments={"doc": blob})
    done = state("a", "succeeded", FINISHED, arguments={"doc": blob}, finished_at=utcnow(), result=1)
    fresh = state("b", "running", RUNNING, arguments={"doc": blob})  # its enqueue insert has not landed
    await store.update_many([done, fresh])
    assert len([text for text in sent if "x" * 1000 in text]) == 1, "the recorded run's arguments were sent again"
    await store.update_many([running])  # arrives late: ignored
    a, b = await store.get("a"), await store.get("b")
    assert a is not None and (a.status, a.result, a.arguments) == ("succeeded", 1, {"doc": blob})
    assert b is not None and (b.status, b.arguments) == ("running", {"doc": blob})
    await store.close()


def _big_run(run_id: str, blob: str) -> Run:
    return Run(id=run_id, function="f", arguments={"doc": blob}, status="queued", enqueued_at=utcnow())


async def test_big_arguments_live_outside_the_runs_row_and_every_read_sees_them(database_url):
    """A run's row is updated at each step and SQLite rewrites a whole row on every update: big arguments
    are kept in `run_arguments`, written once, and the row holds `{}`. Reads, search, delete, prune and a
    run recorded by its worker first all see or clear them; rows written inline before 0003 still read."""
    from sqlalchemy import text

    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    blob = "x" * 100_000 + "needle"
    await store.insert_many([_big_run("a", blob), run("small")])
    await store.update_many([state("w", "running", RUNNING, arguments={"doc": blob})])  # worker first
    await store.insert_many([_big_run("w", blob)])  # then its enqueue: no duplicate, no error
    await store.update_many([state("a", "succeeded", FINISHED, arguments={"doc": blob}, finished_at=utcnow())])
    async with store.engine.connect() as conn:
        inline = dict((await conn.execute(text("SELECT id, length(CAST(arguments AS TEXT)) FROM runs"))).all())
        side = (await conn.execute(text("SELECT run_id FROM run_arguments ORDER BY run_id"))).scalars().all()
        assert inline["a"] < 10 and inline["w"] < 10, inline  # the rows stay small
        assert side == ["a", "w"]
        # a row written by a runtime before 0003 keeps its arguments inline
        await conn.execute(
            text("UPDATE runs SET arguments = :doc WHERE id = 'small'"), {"doc": '{"doc": "' + blob + '"}'}
        )
        await conn.commit()

    for run_id in ("a", "w", "small"):
        got = await store.get(run_id)
        assert got is not None and got.arguments == {"doc": blob}, run_id
    assert (await store.get("a")).status == "succeeded"  # type: ignore[union-attr]
    assert {r.id for r in await store.find(search="needle")} == {"a", "w", "small"}
    assert {r.id: r.arguments for r in await store.list()}["w"] == {"doc": blob}
    assert (await store.get_many(["a"]))["a"].arguments == {"doc": blob}

    assert await store.delete("w")
    assert await store.prune(utcnow() + timedelta(seconds=1)) == ["a"]
    await store.forget(["small"])
    async with store.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM run_arguments"))).scalar_one() == 0
        assert (await conn.execute(text("SELECT count(*) FROM runs"))).scalar_one() == 0
    await store.close()


async def test_forgetting_an_unstarted_run_keeps_the_arguments_of_one_a_worker_recorded(database_url):
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    blob = "y" * 50_000
    await store.insert_many([_big_run("new", blob)])
    await store.update_many([state("started", "running", RUNNING, arguments={"doc": blob})])
    await store.forget(["new", "started"])
    assert await store.get("new") is None
    kept = await store.get("started")
    assert kept is not None and kept.arguments == {"doc": blob}
    await store.close()


def _queued_row(run_id: str) -> dict[str, object]:
    return {"id": run_id, "function": "f", "arguments": {}, "status": "queued", "enqueued_at": utcnow(), "history": []}


async def test_a_small_insert_on_a_free_sqlite_database_makes_no_thread_hop(tmp_path):
    """The hop to the insert thread costs more CPU than the insert itself: a free database is written on
    the loop's thread, and a long run of such inserts still gets its WAL checkpointed."""
    import threading

    from runtime.store.sqlite_insert import CHECKPOINT_EVERY

    store = RunStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")
    await store.init()
    await store.insert_many([_queued_row("a")])
    assert not [t for t in threading.enumerate() if t.name.startswith("runs-insert")], "the insert hopped"
    assert await store.get("a") is not None
    for i in range(CHECKPOINT_EVERY * 12):
        await store.insert_many([_queued_row(f"r{i}")])
    wal = tmp_path / "runs.db-wal"
    # about 7 pages (the row, the indexes) per commit: unchecked, this WAL would pass 40 MB
    assert wal.stat().st_size < 8_000_000, wal.stat().st_size
    await store.close()


async def test_an_insert_while_another_connection_holds_the_write_lock_waits_off_the_loop(tmp_path):
    """With the database locked, the inline try gives up at once: the insert waits on its thread (the loop
    keeps running) and lands once the lock is released."""
    import asyncio
    import sqlite3

    store = RunStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")
    await store.init()
    await store.insert_many([_queued_row("before")])  # the inline connection is open
    other = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    inserting = asyncio.create_task(store.insert_many([_queued_row("locked")]))
    ticks = 0
    for _ in range(20):
        await asyncio.sleep(0.01)
        ticks += 1
    assert not inserting.done() and ticks == 20
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(inserting, 10)
    assert await store.get("locked") is not None
    await store.insert_many([_queued_row("after")])  # inline again
    assert await store.get("after") is not None
    await store.close()


async def test_the_postgres_fast_insert_survives_a_dropped_connection(database_url):
    """A connection the server dropped (a restart, a proxy, an administrator) is replaced within the same
    insert, as the engine's pre-ping would: the enqueue's record is still saved."""
    import psycopg2
    import pytest
    from sqlalchemy.exc import DBAPIError

    if not database_url.startswith("postgresql"):
        pytest.skip("the asyncpg insert")
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.insert_many([_queued_row("first")])
    conn = store.fast_insert.conn  # type: ignore[union-attr]
    assert conn is not None
    with psycopg2.connect(database_url) as admin, admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (conn.get_server_pid(),))
    await store.insert_many([_queued_row("after")])
    assert await store.get("after") is not None

    store.fast_insert.connect_args["port"] = 1  # type: ignore[union-attr]  # nothing listens there
    store.fast_insert._drop()  # type: ignore[union-attr]
    with pytest.raises((DBAPIError, OSError)):
        await store.insert_many([_queued_row("unreachable")])
    await store.close()


# --- counting runs: run_counts, kept by triggers on `runs` -------------------------------------------


async def group_by(store: RunStore) -> dict[str, dict[str, int]]:
    """The runs per function and status, counted the slow way: a scan of `runs`."""
    out: dict[str, dict[str, int]] = {}
    async with store.engine.connect() as conn:
        query = "SELECT function, status, COUNT(*) FROM runs GROUP BY function, status"
        for function, status, n in (await conn.exec_driver_sql(query)).all():
            out.setdefault(function, {})[status] = n
    return out


async def test_counts_follow_every_change_the_store_makes(database_url):
    """Inserts, worker updates (in and out of order), deletes, prunes, forgets and folds, at random (fixed
    seed): after each, the counts are what a scan of `runs` gives."""
    rng = random.Random(12)
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    ids: list[str] = []
    for step in range(120):
        action = rng.choice(["insert", "insert", "update", "update", "delete", "prune", "forget", "fold"])
        if action == "insert":
            new = [f"r{step}-{i}" for i in range(rng.randint(1, 4))]
            await store.insert_many([run(i, rng.choice("fgh"), rng.choice(["queued", "scheduled"])) for i in new])
            ids += new
        elif action == "update" and ids:
            chosen = rng.sample(ids, min(len(ids), rng.randint(1, 5)))
            status, phase = rng.choice([("running", RUNNING), ("succeeded", FINISHED), ("failed", FINISHED)])
            finished = utcnow() - timedelta(days=2) if phase == FINISHED else None
            await store.update_many([state(i, status, phase, finished_at=finished) for i in chosen])
        elif action == "delete" and ids:
            await store.delete_many([*rng.sample(ids, min(len(ids), 2)), "never-was"])
        elif action == "prune":
            await store.prune(utcnow() - timedelta(days=1), statuses=("succeeded", "failed"))
        elif action == "forget" and ids:
            await store.forget(rng.sample(ids, 1))
        elif action == "fold":
            await store.fold_counts()
        assert await store.counts() == await group_by(store), (step, action)
    await store.close()


async def test_counts_stay_exact_while_processes_write_and_fold_at_once(database_url):
    """Three stores (three processes' engines) insert, update and fold side by side: nothing is counted
    twice or lost, whichever fold sees whose rows."""
    url = Settings(database_url=database_url).database_url
    stores = [RunStore(url) for _ in range(3)]
    await stores[0].init()

    async def writer(n: int, store: RunStore) -> None:
        for batch in range(15):
            new = [f"w{n}-{batch}-{i}" for i in range(5)]
            await store.insert_many([run(i, f"f{n % 2}") for i in new])
            await store.update_many([state(i, "running", RUNNING, function=f"f{n % 2}") for i in new])
            await store.update_many([state(i, "succeeded", FINISHED, function=f"f{n % 2}") for i in new[:3]])
            await store.fold_counts()

    await asyncio.gather(*(writer(n, store) for n, store in enumerate(stores)))
    expected = {"f0": {"succeeded": 90, "running": 60}, "f1": {"succeeded": 45, "running": 30}}
    assert await group_by(stores[0]) == expected
    assert await stores[0].counts() == expected
    await stores[0].fold_counts()
    async with stores[0].engine.connect() as conn:  # folded: one row per function and status
        assert (await conn.exec_driver_sql("SELECT COUNT(*) FROM run_counts")).scalar() == 4
    for store in stores:
        await store.close()


async def test_counting_never_reads_the_runs_table(database_url):
    """What made /api/stats take 13 s at 10M runs on SQLite (1 s on Postgres): a GROUP BY over `runs`."""
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.insert_many([run(f"r{i}", "f") for i in range(50)])
    statements: list[str] = []
    event.listen(store.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store._fold_due = 0.0  # the read starts a fold too, as it does every FOLD_EVERY seconds
    assert await store.counts() == {"f": {"queued": 50}}
    await store.close()  # waits for the fold (by the driver, with counting.py's statements: none reads `runs`)
    assert not [s for s in statements if "runs " in s or s.rstrip().endswith("runs")]
    again = RunStore(Settings(database_url=database_url).database_url)
    async with again.engine.connect() as conn:  # folded: one row for the function and status
        assert (await conn.exec_driver_sql("SELECT COUNT(*), SUM(n) FROM run_counts")).one() == (1, 50)
    await again.close()


async def test_the_last_hours_queries_use_the_finished_at_index(tmp_path):
    """The dashboard's runs finished per minute and `runtime queues`' last hour read only the last hour's
    runs, even on a SQLite store never ANALYZEd (they scanned `runs` every 2 s: 226 ms at 1M rows)."""
    store = RunStore(f"sqlite+aiosqlite:///{tmp_path}/runs.db")
    await store.init()
    await store.insert_many([run(f"r{i}", status="succeeded") for i in range(20)])
    asked: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "finished_at >=" in statement:
            asked.append((statement, parameters))

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    await store.throughput()
    await store.finished_counts(utcnow() - timedelta(hours=1))
    await store.finished_per_minute(["default"])
    await store.close()
    db = sqlite3.connect(tmp_path / "runs.db")
    plans = [row[-1] for statement, params in asked for row in db.execute("EXPLAIN QUERY PLAN " + statement, params)]
    db.close()
    searches = [p for p in plans if p.startswith(("SEARCH", "SCAN"))]
    assert len(searches) == 3 and all("ix_runs_finished_at" in p for p in searches), plans


async def test_finished_per_minute_counts_each_queue_in_the_database(database_url):
    """The queues view's chart: per queue and minute, the runs that succeeded or failed (processed) and
    those that failed; cancelled runs, runs still going and runs older than the window are left out."""
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    now = utcnow()
    minute = now.replace(second=0, microsecond=0) - timedelta(minutes=2)

    def ended(run_id: str, queue: str, status: str, at: object) -> Run:
        return Run(id=run_id, function="f", arguments={}, status=status, enqueued_at=now, finished_at=at, queue=queue)

    await store.insert_many(
        [
            *(ended(f"ok{i}", "default", "succeeded", minute + timedelta(seconds=5 + 15 * i)) for i in range(3)),
            ended("bad", "default", "failed", minute + timedelta(seconds=59)),
            ended("next", "default", "succeeded", minute + timedelta(minutes=1, seconds=1)),
            ended("low1", "low", "failed", minute),
            ended("low2", "low", "failed", minute + timedelta(seconds=30)),
            ended("gone", "default", "cancelled", minute),
            ended("old", "default", "succeeded", now - timedelta(hours=2)),
            ended("going", "default", "running", None),
        ]
    )
    per_queue = await store.finished_per_minute(["default", "idle"], minutes=30, now=now)
    await store.close()
    assert sorted(per_queue) == ["default", "idle", "low"]
    assert all(len(minutes) == 30 for minutes in per_queue.values())
    at = {queue: {m["minute"][11:16]: (m["processed"], m["failed"]) for m in rows} for queue, rows in per_queue.items()}
    first, second = minute.strftime("%H:%M"), (minute + timedelta(minutes=1)).strftime("%H:%M")
    assert at["default"][first] == (4, 1) and at["default"][second] == (1, 0)
    assert at["low"][first] == (2, 2)
    assert sum(p for p, _ in at["default"].values()) == 5 and sum(p for p, _ in at["idle"].values()) == 0
    assert per_queue["default"][-1]["minute"][11:16] == now.strftime("%H:%M")  # oldest first, ending now

"""The run store on SQLite and on Postgres: records, filters, out-of-order updates, pruning."""

from __future__ import annotations

from datetime import timedelta

from runtime.connections import Runtime
from runtime.middleware.records import FINISHED, RUNNING, version
from runtime.runs import Run, RunStore, utcnow
from runtime.settings import Settings


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

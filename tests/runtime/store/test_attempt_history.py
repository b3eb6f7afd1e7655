"""A run's attempts are appended in the store, on SQLite and on Postgres: each worker update adds its attempt's
entry to the list (the message no longer carries it), a same attempt written again replaces its entry, and an
update without an entry keeps the run's last error and first start."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime.settings import Settings
from runtime.store.runs import RunStore
from runtime.store.values import utcnow
from runtime.worker.middleware.records import FINISHED, RUNNING, version
from tests.runtime.store.test_runs import run, state


def entry(attempt: int, started_at: float, error: str | None = None, **more: object) -> dict[str, object]:
    return {"attempt": attempt, "started_at": started_at, "duration_ms": 1.5, "error": error} | more


async def test_each_update_appends_its_attempt_and_keeps_the_last_error_and_first_start(database_url):
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.insert_many([run("a")])
    first = utcnow() - timedelta(seconds=60)
    boom = entry(1, 1767323046.25, "RuntimeError: boom", error_type="RuntimeError")
    await store.update_many(
        [state("a", "retrying", FINISHED, history=[boom], last_error="RuntimeError: boom", started_at=first)]
    )
    await store.update_many([state("a", "running", RUNNING, attempts=2)])  # a start adds nothing
    saved = await store.get("a")
    assert saved is not None and saved.history == [boom] and saved.last_error == "RuntimeError: boom"
    slept = entry(2, 1767323050.5, waited_for="sleep 'nap'")
    await store.update_many([state("a", "waiting", FINISHED + 10, attempts=2, history=[slept])])
    ok = entry(2, 1767323060.75)
    await store.update_many([state("a", "succeeded", FINISHED + 20, attempts=2, history=[ok], finished_at=utcnow())])
    saved = await store.get("a")
    assert saved is not None and saved.history == [boom, slept, ok]
    assert (saved.status, saved.last_error) == ("succeeded", None)
    assert saved.started_at == first  # the first attempt's start, kept
    await store.close()


async def test_an_attempt_written_again_is_listed_once(database_url):
    """A worker that recorded its attempt and died before its ack: the next holder counts that attempt (same
    number, same start) as died with its worker, which replaces the entry instead of adding one."""
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.insert_many([run("a")])
    one = entry(1, 1767323046.125)
    await store.update_many([state("a", "retrying", FINISHED, history=[entry(1, 1767323040.0, "first")])])
    await store.update_many([state("a", "succeeded", FINISHED + 10, attempts=2, history=[entry(2, 1767323046.125)])])
    died = entry(2, 1767323046.125, "the worker died", error_type="WorkerDied")
    await store.update_many([state("a", "failed", FINISHED + 20, attempts=2, history=[died], last_error="died")])
    saved = await store.get("a")
    assert saved is not None and saved.history == [entry(1, 1767323040.0, "first"), died]
    assert one["started_at"] == died["started_at"]
    await store.close()


async def test_an_error_with_a_nul_character_is_kept(database_url):
    """Postgres refuses to read a field of a JSON object holding a \\u0000: entries are matched on their text."""
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.insert_many([run("a")])
    legacy = {"error": "written by an older version", "attempt": 0}  # another key order: kept, never matched
    await store.update_many([state("a", "retrying", FINISHED - 10, history=[legacy])])
    await store.update_many([state("a", "retrying", FINISHED, history=[entry(1, 1.0, "bad\x00byte")])])
    await store.update_many([state("a", "failed", FINISHED + 10, attempts=2, history=[entry(2, 2.0, "then")])])
    saved = await store.get("a")
    assert saved is not None and [h["error"] for h in saved.history] == [legacy["error"], "bad\x00byte", "then"]
    await store.close()


async def test_a_stale_update_adds_no_attempt(database_url):
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.insert_many([run("a")])
    newer = version(FINISHED) + 10_000
    await store.update_many([state("a", "succeeded", FINISHED, history=[entry(1, 1.0)], version=newer)])
    await store.update_many([state("a", "retrying", FINISHED, history=[entry(1, 2.0, "late")])])
    saved = await store.get("a")
    assert saved is not None and (saved.status, saved.history) == ("succeeded", [entry(1, 1.0)])
    await store.close()


async def test_an_update_adds_one_attempt_at_most(database_url):
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    with pytest.raises(ValueError, match="one attempt"):
        await store.update_many([state("a", "failed", FINISHED, history=[entry(1, 1.0), entry(2, 2.0)])])
    await store.close()

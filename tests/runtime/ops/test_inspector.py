"""The inspector CLI (`runtime runs ...`, `runtime queues ...`) as real subprocesses, against a production
setup (REDIS_URL + DATABASE_URL, SQLite and Postgres) and against a running `emulator up`; retention pruning
and the dead-letter alert in process. Failed runs are crafted in the store (and the dead-letter list)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from runtime.scheduler.scheduler import Scheduler
from runtime.settings import Settings
from runtime.store.values import utcnow
from runtime.worker.middleware.dead_letters import DeadLetterAlert
from tests.conftest import Process, command, write_app

MODULE = """
from pathlib import Path

from runtime import task


@task
async def add(a: int, b: int) -> int:
    return a + b


@task
async def urgent(note: str) -> str:
    return note


@task
async def touch(folder: str, name: str) -> None:
    Path(folder, name).write_text("ran")


@task
async def boom(n: int = 0) -> None:
    raise RuntimeError(f"boom number {n}")
"""

MANIFEST = """
app: inspect-test
defaults: {retries: 0, timeout: 30s, dead_letter_alert: 3}
queues: {critical: 6, default: 3}
functions:
  add:
    handler: {module}:add
    task: {retention: 7d}
  urgent:
    handler: {module}:urgent
    task: {queue: critical}
  touch:
    handler: {module}:touch
    task: {}
  boom:
    handler: {module}:boom
    task: {dead_letter_alert: 2}
"""


def make_app(directory: Path) -> Path:
    module = f"insp_{uuid.uuid4().hex[:12]}"
    return write_app(directory, MANIFEST.replace("{module}", module), {f"{module}.py": MODULE})


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`runtime ARGS` as a real subprocess, with only the REDIS_URL/DATABASE_URL given in `env`."""
    full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")} | (env or {})
    return subprocess.run([command("runtime"), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def cli_all(*commands: tuple[str, ...], cwd: Path, env: dict[str, str] | None = None) -> list[Any]:
    """Several independent `runtime ...` subprocesses at once (each starts an interpreter: most of a call's
    time, and a test's, is that start-up on one core); their results in the order given."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda args: cli(*args, cwd=cwd, env=env), commands))


def failed_row(
    run_id: str, function: str = "boom", finished_at: datetime | None = None, **fields: Any
) -> dict[str, Any]:
    finished = finished_at or utcnow()
    error = f"RuntimeError: boom of {run_id}"
    history = [
        {
            "attempt": 1,
            "started_at": finished.timestamp(),
            "duration_ms": 12.5,
            "error": error,
            "traceback": 'Traceback (most recent call last):\n  File "app.py", line 9, in boom\nRuntimeError: boom',
        }
    ]
    return {
        "id": run_id,
        "function": function,
        "arguments": {"n": 7},
        "status": "failed",
        "attempts": 1,
        "max_attempts": 1,
        "last_error": error,
        "enqueued_at": finished - timedelta(milliseconds=30),
        "scheduled_for": None,
        "started_at": finished - timedelta(milliseconds=20),
        "finished_at": finished,
        "result": None,
        "history": history,
        "replay_of": None,
        "version": 12,
        "queue": "default",
    } | fields


@dataclass
class App:
    runtime: Runtime
    manifest: Path
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, cwd=self.manifest.parent, env=self.env)

    def cli_all(self, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        return cli_all(*commands, cwd=self.manifest.parent, env=self.env)

    async def fail(self, rows: list[dict[str, Any]]) -> None:
        """Record failed runs and put them in the dead-letter list, as the worker does."""
        for start in range(0, len(rows), 500):
            await self.runtime.store.insert_many(rows[start : start + 500])
        dead = {row["id"]: row["finished_at"].timestamp() for row in rows}
        await self.runtime.broker.redis.zadd(self.runtime.keys.dead, dead)

    async def enqueue(self, function: str, **arguments: Any) -> str:
        [run_id] = await self.runtime.enqueue(self.runtime.app.tasks[function], [arguments])
        return run_id


async def open_app(directory: Path, redis_url: str, database_url: str) -> AsyncIterator[App]:
    manifest = make_app(directory)
    settings = Settings(redis_url=redis_url, database_url=database_url)
    runtime = Runtime.from_manifest(manifest, settings)
    await runtime.start()
    env = {"REDIS_URL": redis_url, "DATABASE_URL": database_url, "WORKER_HEALTH_PORT": "0"}
    try:
        yield App(runtime, manifest, env)
    finally:
        await runtime.stop()


@pytest.fixture
async def app(tmp_path: Path, redis_url: str, database_url: str) -> AsyncIterator[App]:
    async for opened in open_app(tmp_path / "app", redis_url, database_url):
        yield opened


@pytest.fixture
async def sqlite_app(tmp_path: Path, redis_url: str, sqlite_url: str) -> AsyncIterator[App]:
    async for opened in open_app(tmp_path / "app", redis_url, sqlite_url):
        yield opened


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


# --- production: REDIS_URL + DATABASE_URL ----------------------------------------------------------


async def test_runs_lists_newest_first_with_filters_and_json(app: App) -> None:
    added = [await app.enqueue("add", a=i, b=1) for i in range(3)]
    urgent = await app.enqueue("urgent", note="find-me-please")
    await app.fail([failed_row("f" * 32, finished_at=utcnow() + timedelta(seconds=1))])  # the newest

    table, listed, failed, critical, add, found, by_id, unknown = app.cli_all(
        ("runs",),
        ("runs", "--json"),
        ("runs", "--status", "failed", "--json"),
        ("runs", "--queue", "critical", "--json"),
        ("runs", "--function", "add", "--limit", "2", "--json"),
        ("runs", "--search", "find-me", "--json"),
        ("runs", "--search", urgent[-8:], "--json"),
        ("runs", "--status", "exploded"),
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "function", "queue", "status"]
    assert [line.split()[0] for line in lines[1:]] == ["f" * 32, urgent, *reversed(added)]
    assert "RuntimeError: boom of" in table.stdout and "critical" in table.stdout

    listed = json.loads(listed.stdout)
    assert [run["id"] for run in listed] == ["f" * 32, urgent, *reversed(added)]
    assert listed[0]["status"] == "failed" and listed[1]["queue"] == "critical"
    assert [r["id"] for r in json.loads(failed.stdout)] == ["f" * 32]
    assert [r["id"] for r in json.loads(critical.stdout)] == [urgent]
    assert [r["id"] for r in json.loads(add.stdout)] == [added[2], added[1]]
    assert [r["id"] for r in json.loads(found.stdout)] == [urgent]
    assert [r["id"] for r in json.loads(by_id.stdout)] == [urgent]
    one_line_error(unknown, "unknown status 'exploded'")


async def test_runs_show_prints_arguments_attempts_tracebacks_and_result(app: App) -> None:
    await app.fail([failed_row("a" * 32)])
    shown, shown_json, nope = app.cli_all(
        ("runs", "show", "a" * 32), ("runs", "show", "a" * 32, "--json"), ("runs", "show", "nope")
    )
    assert shown.returncode == 0, shown.stderr
    assert '{"n": 7}' in shown.stdout
    assert "attempt 1 (12 ms): error: RuntimeError: boom of" in shown.stdout
    assert '    File "app.py", line 9, in boom' in shown.stdout
    as_json = json.loads(shown_json.stdout)
    assert as_json["history"][0]["traceback"].startswith("Traceback")
    one_line_error(nope, "no run with id 'nope'")


async def test_replay_and_delete_by_id(app: App) -> None:
    await app.fail([failed_row("a" * 32), failed_row("b" * 32)])
    ok = await app.enqueue("add", a=1, b=2)

    # independent runs and refusals: at once
    replayed, refused, deleted, no_ids, bad_since = app.cli_all(
        ("runs", "replay", "a" * 32, "--json"),
        ("runs", "replay", ok),
        ("runs", "delete", "b" * 32, "nope"),
        ("runs", "replay"),
        ("runs", "delete", "--failed", "--since", "soon"),
    )
    assert replayed.returncode == 0, replayed.stderr
    answer = json.loads(replayed.stdout)
    assert answer["count"] == 1 and answer["errors"] == {}
    new = await app.runtime.store.get(answer["ids"][0])
    assert new is not None and new.replay_of == "a" * 32 and new.arguments == {"n": 7} and new.status == "queued"
    assert await app.runtime.broker.redis.zscore(app.runtime.keys.dead, "a" * 32) is None

    one_line_error(refused, f"run {ok} is queued; only failed runs can be replayed")

    assert deleted.stdout.strip() == "deleted 1 run(s)"
    one_line_error(deleted, "no run with id 'nope'")
    assert await app.runtime.store.get("b" * 32) is None
    assert await app.runtime.broker.redis.zscore(app.runtime.keys.dead, "b" * 32) is None
    one_line_error(no_ids, "give run ids, or --failed")
    one_line_error(bad_since, "--since")


async def test_queues_shows_depths_and_pause_resume(app: App) -> None:
    await app.enqueue("urgent", note="x")
    await app.enqueue("add", a=1, b=1)
    await app.runtime.store.insert_many(
        [failed_row("c" * 32, "add", status="succeeded", queue="default"), failed_row("d" * 32, queue="critical")]
    )
    table, as_json, nope = app.cli_all(("queues",), ("queues", "--json"), ("queues", "pause", "nope"))
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == [
        *("queue", "waiting", "running", "scheduled", "retrying", "dead", "paused"),
        *("succeeded", "1h", "failed", "1h", "cancelled", "1h"),
    ]
    stats = json.loads(as_json.stdout)
    assert list(stats) == ["critical", "default"]
    assert stats["critical"] | {"waiting": 1, "paused": False, "failed_last_hour": 1} == stats["critical"]
    assert stats["default"]["waiting"] == 1 and stats["default"]["succeeded_last_hour"] == 1

    paused = app.cli("queues", "pause", "critical")
    assert paused.returncode == 0 and "paused queue critical" in paused.stdout, paused
    assert json.loads(app.cli("queues", "--json").stdout)["critical"]["paused"] is True
    assert await app.runtime.broker.paused() == {"critical"}
    assert json.loads(app.cli("queues", "resume", "critical", "--json").stdout) == {
        "queue": "critical",
        "paused": False,
    }
    assert await app.runtime.broker.paused() == set()
    one_line_error(nope, "no queue named 'nope'", "critical, default")


async def test_cancel_a_queued_run_and_refuse_a_finished_one(sqlite_app: App) -> None:
    [run_id] = await sqlite_app.runtime.enqueue(sqlite_app.runtime.app.tasks["add"], [{"a": 1, "b": 1}], delay=60)
    await sqlite_app.fail([failed_row("e" * 32, status="succeeded")])
    cancelled, refused = sqlite_app.cli_all(("runs", "cancel", run_id), ("runs", "cancel", "e" * 32))
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"run {run_id} cancelled"
    one_line_error(refused, "already succeeded")


def test_no_settings_and_no_emulator_is_one_line_error(tmp_path: Path) -> None:
    manifest = make_app(tmp_path / "app")
    for result in cli_all(("runs",), ("queues",), ("runs", "show", "x"), cwd=manifest.parent):
        one_line_error(result, "REDIS_URL", "DATABASE_URL", "emulator up")
    # a state.json left by an emulator that is gone is not a running emulator
    (manifest.parent / ".emulator").mkdir()
    state = {"pid": 2**22 + 12345, "redis_url": "redis://127.0.0.1:1/0", "database_url": "sqlite:///x.db"}
    (manifest.parent / ".emulator" / "state.json").write_text(json.dumps(state))
    one_line_error(cli("runs", cwd=manifest.parent), "is not running")


async def test_unreachable_redis_is_one_line_error(tmp_path: Path, sqlite_url: str) -> None:
    manifest = make_app(tmp_path / "app")
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": sqlite_url, "STARTUP_TIMEOUT": "0.5"}
    started = time.monotonic()
    one_line_error(cli("runs", cwd=manifest.parent, env=env), "cannot reach Redis")
    assert time.monotonic() - started < 20


# --- bulk --------------------------------------------------------------------------------------------


async def test_bulk_replay_of_1000_failed_runs(sqlite_app: App) -> None:
    now = utcnow()
    rows = [failed_row(f"{i:032x}", finished_at=now - timedelta(seconds=i)) for i in range(1000)]
    rows += [failed_row(f"old{i:029x}", finished_at=now - timedelta(hours=3)) for i in range(5)]
    await sqlite_app.fail(rows)

    started = time.monotonic()
    replayed = sqlite_app.cli("runs", "replay", "--failed", "--function", "boom", "--since", "1h")
    elapsed = time.monotonic() - started
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip().splitlines()[-1] == "replayed 1000 run(s)"
    assert "1000/1000" in replayed.stderr  # the progress bar
    assert elapsed < 60, elapsed
    print(f"bulk replay of 1000 runs: {elapsed:.1f} s")
    new = await sqlite_app.runtime.store.find(status="queued", limit=2000)
    assert len(new) == 1000 and {run.replay_of for run in new} == {row["id"] for row in rows[:1000]}
    assert await sqlite_app.runtime.broker.redis.zcard(sqlite_app.runtime.keys.dead) == 5

    again = sqlite_app.cli("runs", "replay", "--failed")  # what left the dead-letter list is not replayed twice
    assert again.stdout.splitlines()[-1] == "replayed 5 run(s)", again

    deleted = sqlite_app.cli("runs", "delete", "--failed", "--json")
    assert json.loads(deleted.stdout) == {"count": 1005, "errors": {}}
    assert await sqlite_app.runtime.store.find(status="failed") == []


# --- pause: a real worker takes nothing from a paused queue ------------------------------------------------


async def test_a_paused_queue_accepts_runs_and_no_worker_takes_them_until_resumed(
    sqlite_app: App, spawn: Callable[..., Process], tmp_path: Path
) -> None:
    done = tmp_path / "done"
    done.mkdir()
    assert sqlite_app.cli("queues", "pause", "default").returncode == 0
    worker = spawn(["runtime", "worker", "--manifest", str(sqlite_app.manifest)], cwd=tmp_path, env=sqlite_app.env)
    worker.wait_for("ready", timeout=30)
    ids = [await sqlite_app.enqueue("touch", folder=str(done), name=f"{i}") for i in range(3)]
    urgent = await sqlite_app.enqueue("urgent", note="other queues still run")
    assert (await sqlite_app.runtime.wait(urgent, timeout=20)).status == "succeeded"
    started = time.monotonic()
    assert json.loads(sqlite_app.cli("queues", "--json").stdout)["default"]["waiting"] == 3
    # a worker checks the pause about once a second: 2.5 s (the CLI call above included) and none ran
    await asyncio.sleep(max(0.0, 2.5 - (time.monotonic() - started)))
    assert sorted(p.name for p in done.iterdir()) == []

    assert sqlite_app.cli("queues", "resume", "default").returncode == 0
    for run_id in ids:
        assert (await sqlite_app.runtime.wait(run_id, timeout=20)).status == "succeeded"
    assert sorted(p.name for p in done.iterdir()) == ["0", "1", "2"]


# --- against a running `emulator up` ----------------------------------------------------------------


def test_the_cli_finds_a_running_emulator(tmp_path: Path, spawn: Callable[..., Process]) -> None:
    from tests.emulator.test_up import make_app as make_emulator_app
    from tests.emulator.test_up import start_emulator

    folder = make_emulator_app(tmp_path / "emu")
    emulator = start_emulator(spawn, folder)
    ok = emulator.wait_run(emulator.enqueue("add", {"a": 2, "b": 3})["id"])
    failed = emulator.wait_run(emulator.enqueue("boom", {})["id"])
    assert failed["status"] == "failed"

    listed, shown, queues = cli_all(
        ("runs", "--json"), ("runs", "show", failed["id"]), ("queues", "--json"), cwd=folder
    )
    assert [run["id"] for run in json.loads(listed.stdout)] == [failed["id"], ok["id"]]
    assert "kaboom from the test task" in shown.stdout and "Traceback" in shown.stdout, shown
    assert json.loads(queues.stdout)["default"]["dead"] == 1
    assert cli("queues", "pause", "default", cwd=folder).returncode == 0
    assert json.loads(cli("queues", "--json", cwd=folder).stdout)["default"]["paused"] is True
    assert cli("queues", "resume", "default", cwd=folder).returncode == 0

    replayed = json.loads(cli("runs", "replay", failed["id"], "--json", cwd=folder).stdout)
    assert replayed["count"] == 1
    again = emulator.wait_run(replayed["ids"][0])
    assert again["status"] == "failed" and again["replay_of"] == failed["id"]
    deleted = cli("runs", "delete", "--failed", cwd=folder)
    assert deleted.stdout.strip() == "deleted 2 run(s)", deleted
    assert [run["id"] for run in json.loads(cli("runs", "--json", cwd=folder).stdout)] == [ok["id"]]
    assert emulator.interrupt() == 0
    one_line_error(cli("runs", cwd=folder), "not running")


# --- retention ---------------------------------------------------------------------------------------


async def test_the_scheduler_prunes_by_retention_and_dead_retention(app: App) -> None:
    now = utcnow()

    def finished(run_id: str, function: str, status: str, age: timedelta) -> dict[str, Any]:
        return failed_row(run_id, function, finished_at=now - age, status=status)

    await app.runtime.store.insert_many(
        [
            finished("ok-old", "urgent", "succeeded", timedelta(hours=25)),  # default retention 24h: pruned
            finished("ok-new", "urgent", "succeeded", timedelta(hours=23)),
            finished("add-2d", "add", "succeeded", timedelta(days=2)),  # add keeps 7d
            finished("add-8d", "add", "succeeded", timedelta(days=8)),
        ]
    )
    await app.fail(
        [
            finished("dead-old", "boom", "failed", timedelta(days=91)),
            finished("dead-new", "boom", "failed", timedelta(days=89)),
        ]
    )
    await Scheduler(app.runtime)._prune()
    left = {run.id for run in await app.runtime.store.find(limit=100)}
    assert left == {"ok-new", "add-2d", "dead-new"}
    assert await app.runtime.broker.redis.zrange(app.runtime.keys.dead, 0, -1) == [b"dead-new"]


# --- the dead-letter alert -----------------------------------------------------------------------------


async def test_dead_letter_alert_warns_once_per_crossing(sqlite_app: App, caplog: pytest.LogCaptureFixture) -> None:
    alert = DeadLetterAlert(sqlite_app.runtime)
    caplog.set_level(logging.WARNING, logger="runtime.task")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "dead_letter_alert" in r.getMessage()]

    await sqlite_app.fail([failed_row(f"add{i}", "add") for i in range(3)])  # at the threshold (3): quiet
    assert await alert.check() == [] and warnings() == []
    await sqlite_app.fail([failed_row("add3", "add")])
    assert await alert.check() == [""]
    assert warnings() == [
        "the dead-letter list: 4 run(s), above dead_letter_alert 3; see `runtime runs --status failed`, then "
        "replay or delete them"
    ]
    await sqlite_app.fail([failed_row("add4", "add")])
    assert await alert.check() == [] and len(warnings()) == 1  # still over: no second line
    await sqlite_app.runtime.broker.redis.zrem(sqlite_app.runtime.keys.dead, "add0", "add1", "add2")
    assert await alert.check() == []  # dropped below: re-armed
    await sqlite_app.fail([failed_row(f"boom{i}", "boom") for i in range(3)])  # boom's own threshold is 2
    assert sorted(await alert.check()) == ["", "boom"]
    assert len(warnings()) == 3 and "dead letters of boom: 3 run(s)" in warnings()[-1] + warnings()[-2]

"""Concurrency limits when things break, proven from the tasks' own start/end log (a killed worker's run ends at its
death): under a worker SIGKILL storm no key ever has more than its limit running, nothing is lost, and afterwards
every key runs at its full limit again (no slot leaked); across a Redis pause longer than the lease, no slot is
double-booked."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from runtime.settings import Settings
from tests.chaos.harness import FULL, SUMMARIES, Fleet, Killer, wait_until, worker_env
from tests.conftest import write_app

pytestmark = pytest.mark.chaos

KEYS = 50
RUNS_PER_KEY = 60 if FULL else 20
STORM_SECONDS = 60.0 if FULL else 12.0

SOURCE = """
import asyncio, json, os, random, time
from runtime import task

def mark(key, n, phase):
    line = json.dumps({"key": key, "n": n, "phase": phase, "pid": os.getpid(), "t": time.time()}) + "\\n"
    fd = os.open(os.environ["CHAOS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)

@task
async def limited(key: str, n: int, seconds: float = 0.0) -> None:
    mark(key, n, "start")
    await asyncio.sleep(seconds or random.uniform(0.5, 1.5))
    mark(key, n, "end")
"""

MANIFEST = """
app: flow-chaos
defaults: {retries: 10, concurrency: 60, backoff: {base: 100ms, max: 500ms}}
functions:
  limited: {handler: "flow_chaos:limited", task: {concurrency: {limit: 3, key: key}}}
"""


def intervals(log: Path, deaths: dict[int, float]) -> list[tuple[str, int, float, float]]:
    """(key, n, start, end) of every execution; one whose worker was killed ends at the kill."""
    text = log.read_text() if log.exists() else ""
    open_: dict[tuple[int, int], dict[str, Any]] = {}
    out = []
    for line in text[: text.rfind("\n") + 1].splitlines():
        mark = json.loads(line)
        if mark["phase"] == "start":
            open_[(mark["n"], mark["pid"])] = mark
        else:
            start = open_.pop((mark["n"], mark["pid"]))
            out.append((mark["key"], mark["n"], start["t"], mark["t"]))
    for (n, pid), start in open_.items():
        out.append((start["key"], n, start["t"], deaths.get(pid, float("inf"))))
    return out


def most_at_once(spans: list[tuple[str, int, float, float]]) -> dict[str, int]:
    edges: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for key, _, start, end in spans:
        edges[key] += [(start, 1), (end, -1)]
    most = {}
    for key, points in edges.items():
        now = top = 0
        for _, step in sorted(points):  # an end before a start at the same instant
            now += step
            top = max(top, now)
        most[key] = top
    return most


async def test_a_kill_storm_never_runs_more_than_the_limit_of_a_key_and_leaks_no_slot(
    redis_url: str, tmp_path: Path, effects_log: Path, fleets: Callable[..., Fleet]
) -> None:
    app = write_app(tmp_path / "app", MANIFEST, {"flow_chaos.py": SOURCE})
    database_url = f"sqlite:///{tmp_path}/runs.db"
    fleet = fleets(app, worker_env(redis_url, database_url, effects_log, LOG_LEVEL="info"))
    runtime = Runtime.from_manifest(app, Settings(redis_url=redis_url, database_url=database_url))
    await runtime.start()
    try:
        for worker in fleet.start(3):
            worker.wait_for("ready")
        fn = runtime.app.tasks["limited"]
        args = [{"key": f"k{k}", "n": k * 100 + i} for i in range(RUNS_PER_KEY) for k in range(KEYS)]
        ids = await fn.enqueue_many(args)
        started = time.monotonic()
        with Killer(fleet, (1.5, 3.0)):
            while time.monotonic() - started < STORM_SECONDS:
                await asyncio.sleep(0.2)
        for run_id in ids:
            run = await runtime.wait(run_id, timeout=120)
            assert run.status == "succeeded", (run.id, run.status, run.last_error)
        spans = intervals(effects_log, fleet.deaths)
        assert {n for _, n, _, _ in spans} == {a["n"] for a in args}  # nothing lost
        most = most_at_once(spans)
        assert max(most.values()) <= 3, sorted(most.items(), key=lambda kv: -kv[1])[:5]
        # afterwards: every key runs at its full limit again (no slot leaked by a killed worker)
        after = [{"key": f"k{k}", "n": 100_000 + k * 10 + i, "seconds": 3.0} for k in range(6) for i in range(3)]
        await asyncio.sleep(2.5)  # the lease: a dead worker's holds lapse
        later = await fn.enqueue_many(after)
        for run_id in later:
            assert (await runtime.wait(run_id, timeout=60)).status == "succeeded"
        again = most_at_once([s for s in intervals(effects_log, fleet.deaths) if s[1] >= 100_000])
        SUMMARIES.append(
            f"chaos flow-kill-storm: keys={KEYS} runs={len(ids)} kills={fleet.kills} lost=0 "
            f"most_at_once={max(most.values())} (limit 3) full_limit_after={min(again.values())}"
        )
        assert fleet.kills >= 3, f"set-up: only {fleet.kills} kills"
        assert again == {f"k{k}": 3 for k in range(6)}, again
    finally:
        await runtime.stop()


async def test_a_redis_pause_longer_than_the_lease_double_books_no_slot(
    own_redis: Any, tmp_path: Path, effects_log: Path, fleets: Callable[..., Fleet]
) -> None:
    app = write_app(tmp_path / "app", MANIFEST, {"flow_chaos.py": SOURCE})
    database_url = f"sqlite:///{tmp_path}/runs.db"
    fleet = fleets(app, worker_env(own_redis.url, database_url, effects_log, LOG_LEVEL="info"))
    runtime = Runtime.from_manifest(app, Settings(redis_url=own_redis.url, database_url=database_url))
    await runtime.start()
    try:
        for worker in fleet.start(2):
            worker.wait_for("ready")
        fn = runtime.app.tasks["limited"]
        ids = await fn.enqueue_many([{"key": "p", "n": n, "seconds": 10.0} for n in range(3)])
        await wait_until(lambda: len(intervals(effects_log, {})) == 3, 10, "the 3 slots taken")
        ids += await fn.enqueue_many([{"key": "p", "n": 10 + n, "seconds": 0.5} for n in range(3)])
        await asyncio.sleep(1.0)  # they wait for a slot
        own_redis.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(6.0)  # 3 leases
        own_redis.process.send_signal(signal.SIGCONT)
        for run_id in ids:
            assert (await runtime.wait(run_id, timeout=60)).status == "succeeded"
        most = most_at_once(intervals(effects_log, fleet.deaths))
        SUMMARIES.append(f"chaos flow-redis-pause: pause=6s lease=2s most_at_once={most['p']} (limit 3)")
        assert most == {"p": 3}
    finally:
        await runtime.stop()

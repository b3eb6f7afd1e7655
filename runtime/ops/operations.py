"""What an operator does to runs and queues: list, show, replay, delete, cancel, pause and resume.

Written once here; the inspector CLI (`runtime runs`, `runtime queues`), the dashboard's JSON API and
Python callers are thin faces over these functions. Unknown things raise LookupError, a run in the wrong
state ValueError; both carry a one-line message meant for the user.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from runtime.errors import ArgumentsError
from runtime.ops import metrics
from runtime.ops.metrics import queue_depths
from runtime.store.runs import PRUNE_CHUNK
from runtime.store.values import FINAL, STATUSES, utcnow

if TYPE_CHECKING:
    from runtime.app.connections import Runtime
    from runtime.store.models import Run  # the SQLModel classes: imported by the store where a query needs them

Progress = Callable[[int, int], None]  # (done, total), called as a bulk operation advances
QUEUE_STATES = metrics.STATES  # a queue's depths, named once: waiting, running, scheduled, retrying, dead
REPLAY_CONCURRENCY = 16  # replays in flight at once: Redis and the database overlap, neither is flooded


@dataclass(frozen=True)
class RunFilter:
    """Which runs a bulk operation takes: by status, function, and `since` (seconds: finished, or if
    unfinished enqueued, within that long before now)."""

    status: str | None = "failed"
    function: str | None = None
    since: float | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; use one of {', '.join(STATUSES)}")
        if self.since is not None and not (isinstance(self.since, int | float) and self.since > 0):
            raise ValueError(f"since must be a positive number of seconds, not {self.since!r}")

    def cutoff(self) -> datetime | None:
        return None if self.since is None else utcnow() - timedelta(seconds=self.since)


@dataclass
class Outcome:
    """What a bulk operation did: how many runs it took, the runs it made or changed, and why it skipped
    the others (run id -> a one-line reason)."""

    count: int = 0
    runs: list[Run] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _check_status(status: str | None) -> None:
    if status and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")


def _check_queue(runtime: Runtime, queue: str) -> None:
    declared = runtime.app.manifest.queue_names()
    if queue not in declared:
        raise LookupError(f"no queue named {queue!r:.60}; the manifest declares: {', '.join(declared)}")


async def list_runs(
    runtime: Runtime,
    *,
    function: str | None = None,
    status: str | None = None,
    queue: str | None = None,
    limit: int = 100,
    offset: int = 0,
    search: str | None = None,
) -> list[Run]:
    """Runs, newest first. `search` matches a run id prefix, or text in the arguments."""
    _check_status(status)
    if not 1 <= limit <= 10_000:
        raise ValueError("limit must be a whole number from 1 to 10000")
    if offset < 0:
        raise ValueError("offset must be a whole number, 0 or more")
    return await runtime.store.find(
        function=function, status=status, queue=queue, search=search or None, limit=limit, offset=offset
    )


async def show_run(runtime: Runtime, run_id: str) -> Run:
    run = await runtime.store.get(run_id)
    if run is None:
        raise LookupError(f"no run with id {run_id!r:.60}")
    return run


async def _select(runtime: Runtime, ids: list[str] | None, where: RunFilter | None) -> list[str]:
    if (ids is None) == (where is None):
        raise ValueError("give either run ids or a filter (e.g. status 'failed'), not both or neither")
    if ids is not None:
        return list(dict.fromkeys(ids))
    assert where is not None
    return await runtime.store.find_ids(function=where.function, status=where.status, since=where.cutoff())


async def replay(
    runtime: Runtime,
    ids: list[str] | None = None,
    where: RunFilter | None = None,
    *,
    progress: Progress | None = None,
) -> Outcome:
    """Queue failed runs again as new runs (`replay_of` the old one, on the old run's queue while it is
    declared); each leaves the dead-letter list. With a filter, only runs still in the dead-letter list
    are taken, so replaying "the failed runs" twice does not queue them twice."""
    selected = await _select(runtime, ids, where)
    redis = runtime.broker.redis
    outcome = Outcome()
    if where is not None and selected:
        scores: list[Any] = []
        for start in range(0, len(selected), PRUNE_CHUNK):
            scores += await redis.zmscore(runtime.keys.dead, selected[start : start + PRUNE_CHUNK])
        selected = [run_id for run_id, score in zip(selected, scores, strict=True) if score is not None]
    total, done = len(selected), 0
    gate = asyncio.Semaphore(REPLAY_CONCURRENCY)
    queues = runtime.app.manifest.queue_names()

    async def one(run: Run) -> None:
        fn = runtime.app.tasks.get(run.function)
        if fn is None:
            outcome.errors[run.id] = f"run {run.id}: function {run.function!r} is no longer in the manifest"
            return
        async with gate:
            try:
                queue = run.queue if run.queue in queues else None
                [new] = await runtime.submit(fn, [run.arguments], replay_of=run.id, queue=queue)
            except (ArgumentsError, ValueError) as exc:
                outcome.errors[run.id] = f"run {run.id}: {exc}"
                return
        from runtime.store.models import Run

        outcome.runs.append(Run.model_validate(new))
        await runtime.forget_dead_letters([run.id])

    for start in range(0, total, PRUNE_CHUNK):
        chunk = selected[start : start + PRUNE_CHUNK]
        found = await runtime.store.get_many(chunk)
        runnable = []
        for run_id in chunk:
            run = found.get(run_id)
            if run is None:
                outcome.errors[run_id] = f"no run with id {run_id!r:.60}"
            elif run.status != "failed":
                outcome.errors[run_id] = f"run {run_id} is {run.status}; only failed runs can be replayed"
            else:
                runnable.append(run)
        await asyncio.gather(*(one(run) for run in runnable))
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    outcome.count = len(outcome.runs)
    return outcome


async def delete(
    runtime: Runtime,
    ids: list[str] | None = None,
    where: RunFilter | None = None,
    *,
    progress: Progress | None = None,
) -> Outcome:
    """Forget runs: their records and their dead letters. An unknown id is reported, not fatal."""
    selected = await _select(runtime, ids, where)
    outcome = Outcome()
    total = len(selected)
    for start in range(0, total, PRUNE_CHUNK):
        chunk = selected[start : start + PRUNE_CHUNK]
        await runtime.forget_dead_letters(chunk)
        existing = set(await runtime.store.get_many(chunk)) if ids is not None else set(chunk)
        outcome.count += await runtime.store.delete_many(chunk)
        for run_id in chunk:
            if run_id not in existing:
                outcome.errors[run_id] = f"no run with id {run_id!r:.60}"
        if progress is not None:
            progress(min(start + PRUNE_CHUNK, total), total)
    return outcome


async def cancel(runtime: Runtime, ids: list[str]) -> Outcome:
    """Cancel runs (`Runtime.cancel`): a scheduled or queued run never starts, a running one is stopped."""
    do_cancel = getattr(runtime, "cancel", None)
    if do_cancel is None:
        raise NotImplementedError("this runtime cannot cancel runs yet (Runtime.cancel is missing)")
    outcome = Outcome()
    for run_id in dict.fromkeys(ids):
        try:
            outcome.runs.append(await do_cancel(run_id))
        except (LookupError, ValueError) as exc:
            outcome.errors[run_id] = str(exc)
    outcome.count = len(outcome.runs)
    return outcome


async def queue_stats(runtime: Runtime, *, last_hour: bool = True) -> dict[str, dict[str, Any]]:
    """Per declared queue: waiting, running, scheduled, retrying, dead (`queue_depths`; its own dead letters,
    those from before queues had their own lists shown on the default queue), paused, and (unless not
    `last_hour`: that reads the runs of the last hour, a query to spare a view polled every 2 s) the runs
    that succeeded / failed / were cancelled in the last hour (`<status>_last_hour`)."""
    depths, paused = await asyncio.gather(queue_depths(runtime), runtime.broker.paused())
    names = runtime.app.manifest.queue_names()
    since = utcnow() - timedelta(hours=1)
    finished = await runtime.store.finished_counts(since) if last_hour else {}
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        row: dict[str, Any] = {state: depths.get(name, {}).get(state, 0) for state in QUEUE_STATES}
        row["paused"] = name in paused
        for status in FINAL if last_hour else ():
            row[f"{status}_last_hour"] = finished.get(name, {}).get(status, 0)
        out[name] = row
    return out


async def running_per_worker(runtime: Runtime) -> dict[str, int]:
    """{worker name: tasks it is executing}, from the start marks `queue_depths` counts as running (a task a
    worker only read ahead, or handed back, is not counted)."""
    running: dict[str, int] = {}
    async with runtime.broker.redis.pipeline(transaction=False) as pipe:
        for name in runtime.app.manifest.queue_names():
            pipe.hvals(runtime.keys.queue(name).started)
        marks = [mark for per_queue in await pipe.execute() for mark in per_queue]
    for mark in marks:
        try:
            worker = str(orjson.loads(mark)["worker"])
        except (orjson.JSONDecodeError, TypeError, KeyError):
            worker = "unknown"
        running[worker] = running.get(worker, 0) + 1
    return running


async def pause(runtime: Runtime, queue: str) -> None:
    """Pause a queue: it keeps accepting enqueues, and workers take nothing from it (within a second)."""
    _check_queue(runtime, queue)
    await runtime.broker.redis.set(runtime.keys.queue(queue).paused, "1")


async def resume(runtime: Runtime, queue: str) -> None:
    _check_queue(runtime, queue)
    await runtime.broker.redis.delete(runtime.keys.queue(queue).paused)

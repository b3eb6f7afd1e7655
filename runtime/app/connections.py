"""The Runtime: a process's connections (the broker on Redis, the run store) and the enqueue path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import AuthenticationError, RedisError

from runtime import gc_pause, tracing
from runtime.app.application import Application, load_application
from runtime.app.current import clear_running, running, set_running
from runtime.app.decorators import TaskFunction
from runtime.app.enqueue_flow import submit_flow
from runtime.app.enqueue_options import (
    _GUARDED_KICK,
    _UNIQUE_KICK,
    KEY_HOLD,
    check_at,
    check_deadline,
    check_delay,
    check_size,
)
from runtime.app.enqueue_outcome import answer, send
from runtime.app.enqueue_plan import Plan, plan_of
from runtime.app.enqueue_unique import submit_unique
from runtime.app.parents import tell_parent
from runtime.errors import ArgumentsError, ConfigError, RuntimeNotStarted
from runtime.flow.rate_limit import RateLimiter
from runtime.queue.broker import StreamBroker
from runtime.queue.keys import Keys
from runtime.redaction import redact
from runtime.settings import Settings, get_settings
from runtime.store.record_writer import RecordWriter
from runtime.store.run_ids import new_run_ids
from runtime.store.runs import RunStore
from runtime.store.values import FINAL, database_errors, from_timestamp, utcnow

if TYPE_CHECKING:
    from sqlmodel.ext.asyncio.session import AsyncSession

    from runtime.store.models import Run

logger = logging.getLogger("runtime.enqueue")


def current_runtime() -> Runtime | None:
    runtime: Runtime | None = running()
    return runtime


def session() -> AsyncSession:
    """A database session on the app's database (the one holding run records): `async with session() as s:`."""
    _current = current_runtime()
    if _current is None:
        raise RuntimeNotStarted("no runtime is running in this process, so there is no database session")
    from sqlmodel.ext.asyncio.session import AsyncSession  # here: only the app's own queries use a session

    return AsyncSession(_current.store.engine, expire_on_commit=False)


async def cancel(run_id: str) -> Run:
    """Cancel a run of the app running in this process (see `Runtime.cancel`)."""
    runtime = current_runtime()
    if runtime is None:
        raise RuntimeNotStarted("cannot cancel: no runtime is running in this process")
    return await runtime.cancel(run_id)


def _cancel_version() -> int:
    return int(time.time() * 1000) * 10 + 9  # after any phase written in the same millisecond


class Runtime:
    """What every process of an app shares: its functions, its broker and its run store."""

    def __init__(self, app: Application, settings: Settings | None = None) -> None:
        self.app = app
        self.settings = settings or get_settings()
        self.keys = Keys(app.name)
        self.broker = StreamBroker(
            self.settings.redis_url,
            self.keys,
            app.manifest.queue_names(),
            lease_seconds=self.settings.lease_seconds,
        )
        self.store = RunStore(self.settings.database_url)
        self.records = RecordWriter(self.store)  # enqueues at the same time share one insert
        self._guarded_kick = self.broker.redis.register_script(_GUARDED_KICK)
        self._unique_kick = self.broker.redis.register_script(_UNIQUE_KICK)
        self.rate_limiter = RateLimiter(self.broker.redis)
        self._queues = frozenset(app.manifest.queue_names())
        self._streams = {queue: self.keys.queue(queue).stream for queue in self._queues}
        self._plans: dict[str, Plan] = {}  # a task's enqueue settings, read from the manifest once
        self.waiting: dict[str, str] = {}  # dependency -> why start() still waits for it
        self.origin: str | None = None  # which Redis and database, and why: logged once connected

    @classmethod
    def from_manifest(cls, path: str | Path = "manifest.yaml", settings: Settings | None = None) -> Runtime:
        return cls(load_application(path), settings)

    async def start(self) -> None:
        """Connect to Redis and the database, waiting for each up to STARTUP_TIMEOUT seconds (a line says
        what it waits for); then a ConfigError names the setting of the one that is unreachable."""
        deadline = time.monotonic() + self.settings.startup_timeout
        redis_url = f"Redis at REDIS_URL={redact(self.settings.redis_url)}"
        await self._wait_for("redis", redis_url, self._connect_redis, lambda: (RedisError, OSError), deadline)
        database_url = f"the database at DATABASE_URL={redact(self.settings.database_url)}"
        await self._wait_for("database", database_url, self.store.init, database_errors, deadline)
        set_running(self)
        self._say_origin()

    def _say_origin(self) -> None:
        """Which Redis and database this process uses, once: when it connected, or when it starts waiting for
        one (a process that fails at once says only why, in one line)."""
        if self.origin is not None:
            logging.getLogger("runtime").info("%s", self.origin)
            self.origin = None

    async def _connect_redis(self) -> None:
        await self.broker.redis.ping()
        await self.broker.startup()

    async def _wait_for(
        self,
        name: str,
        what: str,
        connect: Any,
        errors: Callable[[], tuple[type[BaseException], ...]],
        deadline: float,
    ) -> None:
        """Try `connect` with backoff until it works or the deadline passes; `self.waiting` says why not."""
        delay, said = 0.1, ""
        while True:
            try:
                await connect()
            except errors() as exc:  # a function: the database's errors are SQLAlchemy's, imported when caught
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if _refused_for_good(exc):  # a wrong password or URL: waiting cannot fix it
                    deadline = 0.0
                self.waiting[name] = f"waiting: {reason}"[:200]
                left = deadline - time.monotonic()
                if left <= 0:
                    del self.waiting[name]
                    fix = (
                        "Start Redis or set REDIS_URL=redis://host:port/db"
                        if name == "redis"
                        else "Start it or set DATABASE_URL (sqlite:///path/runs.db or "
                        "postgresql://user:password@host:5432/db)"
                    )
                    verb = "reach" if name == "redis" else "use"
                    raise ConfigError(f"cannot {verb} {what}: {reason}. {fix}") from None
                if reason != said:  # one line per dependency (and per new reason), not one per try
                    self._say_origin()
                    logger.warning("waiting for %s: %s; retrying for up to %.0f s", what, reason, left)
                    said = reason
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 2.0)
                continue
            self.waiting.pop(name, None)
            if said:
                logger.info("%s is reachable", what[0].upper() + what[1:])
            return

    async def stop(self) -> None:
        clear_running(self)
        await self.broker.shutdown()
        await self.store.close()

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- enqueue -----------------------------------------------------------------------------------

    def message(
        self,
        function: str,
        run_id: str,
        kwargs: dict[str, Any],
        attempt: int = 1,
        enqueued_at: float | None = None,
        *,
        deadline: float | None = None,
        parent: str | None = None,
        labels: dict[str, Any] | None = None,
    ) -> bytes:
        """A task message in taskiq's JSON format (what `TaskiqMessage` serializes to). `parent`: the run that
        invoked this one (`ctx.invoke`), told when it ends; `labels`: more labels. Every byte of it is in Redis
        while the run waits, so it says only what its record does not: no history (the record's), no queue (the
        worker reads it from the stream it took the message from), no enqueue time once sent again (None)."""
        said: dict[str, Any] = {"attempt": attempt}
        if enqueued_at is not None:
            said["enqueued_at"] = enqueued_at
        if deadline is not None:
            said["deadline"] = deadline
        if parent is not None:
            said["parent"] = parent
        said |= labels or {}
        tracing.inject(said, function)  # a producer span and its W3C context (`traceparent`), when tracing
        message: dict[str, Any] = {
            "task_id": run_id,
            "task_name": function,
            "labels": said,
            "args": [],
            "kwargs": kwargs,
        }
        return orjson.dumps(message)

    async def enqueue(
        self,
        fn: TaskFunction[..., Any],
        arguments: list[dict[str, Any]],
        **options: Any,
    ) -> list[str]:
        """Validate, record and queue runs of a task; returns their ids. Options as `submit`'s."""
        return [row["id"] for row in await self.submit(fn, arguments, **options)]

    def queue_of(self, fn: TaskFunction[..., Any]) -> str:
        return self.app.manifest.queue(fn.name) if fn.name else self.app.manifest.defaults.queue

    async def submit(
        self,
        fn: TaskFunction[..., Any],
        arguments: list[dict[str, Any]],
        *,
        delay: float | None = None,
        at: datetime | None = None,
        queue: str | None = None,
        deadline: float | datetime | None = None,
        key: str | None = None,
        replay_of: str | None = None,
        run_ids: list[str] | None = None,
        guard: str | None = None,
        guard_seconds: float = 172800.0,
        parent: str | None = None,
    ) -> list[dict[str, Any]]:
        """Validate, record and queue runs of a task; returns their records as enqueued.

        A run's record and its message are written side by side (the worker's updates are upserts that
        a late insert never overwrites), so enqueue costs one round trip, not two in a row. The answer
        is the truth about the runs (runtime/app/enqueue_outcome.py):
        - returned: the runs will run: their messages are in Redis, or Redis could not be reached and
          their records are saved as unsent, for the scheduler to queue once Redis answers; a run over its
          function's rate limit is returned too, with its record `skipped`: it will not run;
        - `EnqueueFailed` (`EnqueueUnavailable` when Redis and the database were both down): nothing
          was queued and no record is left: nothing will run;
        - `EnqueueUncertain` (with the ids): Redis's answer was lost; a saved record whose message is
          missing is queued again by the reconciler, so such a run will run.
        `delay` (seconds) or `at` (a datetime) postpones the runs; `queue` picks another declared queue;
        `deadline` (seconds or a datetime) fails a run not finished by then, without retry; `key`, or the
        function's `unique` window, makes a duplicate enqueue return the first run's id and queue nothing.
        `run_ids` fixes the ids (a scheduler fire); `guard` is a Redis key that makes the queueing happen
        at most once across retries and processes (an existing guard: already queued, nothing added).
        The record returned is the run as enqueued: by the time the caller reads it, a worker may have
        moved it on.
        """
        name = fn.name
        if name is None or self.app.tasks.get(name) is not fn:
            raise ValueError(f"{fn!r} is not a task of the app '{self.app.name}' (is it in the manifest?)")
        if at is not None and delay is not None:
            raise ArgumentsError("at: give either `delay` or `at`, not both")
        seconds = check_at(at) if at is not None else check_delay(delay)
        plan = self._plans.get(name) or self._plans.setdefault(name, plan_of(self.app.manifest, name))
        queue = plan.queue if queue is None else queue
        if queue not in self._queues:
            declared = ", ".join(self.app.manifest.queue_names())
            raise ArgumentsError(f"queue: {queue!r:.60} is not declared in the manifest (its queues: {declared})")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
            raise ArgumentsError("key: must be a string of 1 to 200 characters")
        with gc_pause.building(len(arguments)):  # no await inside
            validated = fn.validate_many(arguments)
            now = time.time()
            ends = check_deadline(deadline, now)
            ids = run_ids if run_ids is not None else new_run_ids(len(validated))
            common: dict[str, Any] = {
                "queue": queue,
                "deadline": from_timestamp(ends),
                "idempotency_key": key,
                "function": name,
                "status": "scheduled" if seconds else "queued",
                "attempts": 0,
                "max_attempts": plan.max_attempts,
                "last_error": None,
                "enqueued_at": from_timestamp(now),
                "scheduled_for": from_timestamp(now + seconds) if seconds else None,
                "started_at": None,
                "finished_at": None,
                "result": None,
                "history": [],
                "replay_of": replay_of,
                "version": 0,
                "trace_id": tracing.current_trace_id(),
                "parent": parent,
            }
            pairs = list(zip(ids, validated, strict=True))
            rows = [common | {"id": run_id, "arguments": kwargs} for run_id, kwargs in pairs]
            messages = [
                self.message(name, run_id, kwargs, enqueued_at=now, deadline=ends, parent=parent)
                for run_id, kwargs in pairs
            ]
            if tracing.enabled() and common["trace_id"] is None:  # outside any span: each enqueue began a trace
                for row, message in zip(rows, messages, strict=True):
                    row["trace_id"] = tracing.trace_id_of(orjson.loads(message)["labels"])
            check_size(name, messages, validated, self.settings.max_arguments_size)
        spec = plan.flow
        flowed = None
        if spec is not None:  # rate limits, debounce, batches (runtime/app/enqueue_flow.py)
            flowed = await submit_flow(self, name, spec, rows, messages, seconds)
            if flowed is not None:
                rows, messages = flowed.rows, flowed.messages  # the rest was settled there (e.g. skipped)
                if not rows:
                    return flowed.merged([])
        queued = await self._queue(plan, queue, rows, messages, seconds, now, key, guard, guard_seconds)
        return queued if flowed is None else flowed.merged(queued)

    async def _queue(
        self,
        plan: Plan,
        queue: str,
        rows: list[dict[str, Any]],
        messages: list[bytes],
        seconds: float,
        now: float,
        key: str | None,
        guard: str | None,
        guard_seconds: float,
    ) -> list[dict[str, Any]]:
        """Record and send the runs (see `submit`)."""
        name, window = plan.name, plan.unique
        if key is not None or window is not None:
            return await submit_unique(self, name, queue, rows, messages, seconds, key, window or KEY_HOLD)
        if guard is None and not seconds:
            return await send(self.broker.sends, self.records, self.store, name, self._streams[queue], rows, messages)
        qk = self.keys.queue(queue)
        if guard is not None:
            keys = [qk.stream, qk.delayed, guard]
            args: list[Any] = [now + seconds if seconds else 0, int(guard_seconds * 1000), *messages]
            kick = self._guarded_kick(keys=keys, args=args)
        else:
            kick = self.broker.kick_many(messages, queue=queue, delay=seconds)
        outcomes: tuple[Any, Any] = await asyncio.gather(self.records.insert(rows), kick, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancelled: the caller is gone
        return await answer(self.store, name, rows, *outcomes, guarded=guard is not None)

    async def cancel(self, run_id: str, wait: float = 2.0) -> Run:
        """Cancel a run: a scheduled, queued or retrying run never starts again; a running one is stopped by
        the worker running it (any worker: the cancel is published to all), within about a second.
        The run ends `cancelled`: never retried, not a dead letter, no failure hook; a child run (`ctx.invoke`)
        tells its parent, which goes on with StepFailed (told here when no worker holds the child)."""
        run = await self.store.get(run_id)
        if run is None:
            raise LookupError(f"no run with id {run_id!r}")
        if run.status in FINAL:
            raise ValueError(f"run {run_id} already {run.status}; only unfinished runs can be cancelled")
        queue = run.queue if run.queue in self.app.manifest.queue_names() else self.app.manifest.defaults.queue
        # first the key (a worker that gets the message later will not start it), then the record, then tell
        # the running one: a run that started before its `running` was saved is recorded `cancelled` by its
        # worker after this write, with its attempt, and that later write wins
        await self.broker.redis.set(self.keys.queue(queue).cancel(run_id), "1", px=int(KEY_HOLD * 1000))
        if run.status != "running":
            # not running: settled here (a worker that later meets its message acks it and records the same)
            row = run.model_dump() | {"status": "cancelled", "finished_at": utcnow(), "version": _cancel_version()}
            row["history"] = []  # no attempt to add: its history stays as recorded
            await self.store.update_many([row])
        if run.status in ("scheduled", "retrying", "waiting"):  # its message leaves the delayed set: counts are true
            delayed = self.keys.queue(queue).delayed
            async for member, _ in self.broker.redis.zscan_iter(delayed, match=f'*"task_id":"{run_id}"*', count=1000):
                await self.broker.redis.zrem(delayed, member)
        if run.status != "running" and run.parent:  # no worker holds it to tell its parent (a later one is ignored)
            await tell_parent(self, run_id, "cancelled")
        await self.broker.redis.publish(self.keys.cancel_channel, run_id)
        deadline = time.monotonic() + wait
        while True:
            latest = await self.store.get(run_id)
            if latest is None or latest.status in FINAL or time.monotonic() > deadline:
                return latest or run
            await asyncio.sleep(0.05)

    async def replay(self, run_id: str) -> Run:
        """Queue a failed run again as a new run; it leaves the dead-letter list."""
        run = await self.store.get(run_id)
        if run is None:
            raise LookupError(f"no run with id {run_id!r}")
        if run.status != "failed":
            raise ValueError(f"run {run_id} is {run.status}; only failed runs can be replayed")
        fn = self.app.tasks.get(run.function)
        if fn is None:
            raise LookupError(f"function {run.function!r} is no longer in the manifest")
        [new_run] = await self.submit(fn, [run.arguments], replay_of=run.id)
        await self.forget_dead_letters([run.id])
        from runtime.store.models import Run  # the SQLModel classes: not before a worker's first task

        return Run.model_validate(new_run)

    async def forget_dead_letters(self, run_ids: list[str]) -> None:
        """Take runs off the dead-letter list: the app's, and their queue's (whichever it is)."""
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            async with self.broker.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self.keys.dead, *chunk)
                for queue in self.app.manifest.queue_names():
                    pipe.zrem(self.keys.queue(queue).dead, *chunk)
                await pipe.execute()

    async def wait(self, run_id: str, timeout: float = 60.0, poll: float = 0.05) -> Run:
        """The run once it has finished (succeeded or failed); TimeoutError after `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            run = await self.store.get(run_id)
            if run is not None and run.status in FINAL:
                return run
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"run {run_id} did not finish within {timeout} s")
            await asyncio.sleep(poll)


def _refused_for_good(exc: BaseException) -> bool:
    """An error no wait can fix: authentication, or a database that does not exist."""
    text = str(exc).lower()
    return isinstance(exc, AuthenticationError) or any(
        word in text for word in ("noauth", "wrongpass", "invalid password", "password authentication failed")
    )

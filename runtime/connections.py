"""The Runtime: a process's connections (the broker on Redis, the run store) and the enqueue path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from redis.exceptions import RedisError
from sqlmodel.ext.asyncio.session import AsyncSession

from runtime import tracing
from runtime.application import Application, load_application
from runtime.broker import StreamBroker
from runtime.decorators import TaskFunction
from runtime.errors import ArgumentsError, ConfigError, EnqueueError, RuntimeNotStarted
from runtime.keys import Keys
from runtime.redaction import redact
from runtime.runs import DATABASE_ERRORS, FINAL, Run, RunStore, from_timestamp
from runtime.settings import Settings, get_settings

_current: Runtime | None = None
logger = logging.getLogger("runtime.enqueue")
MAX_DELAY = 366 * 86400.0  # a year: anything longer is a mistake in seconds vs milliseconds


def check_delay(delay: Any) -> float | None:
    """`delay` as seconds, or a ValueError that names it."""
    if delay is None:
        return None
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise ValueError(f"delay must be a number of seconds, not {type(delay).__name__} {delay!r:.40}")
    if not 0 <= delay <= MAX_DELAY:  # also refuses nan and inf
        raise ValueError(f"delay must be from 0 to {MAX_DELAY:.0f} seconds (a year), not {delay!r}")
    return float(delay)


def encode_arguments(function: str, limit: int, encode: Any) -> bytes:
    """A run's message, or an ArgumentsError naming what cannot be sent (too big, out of range)."""
    try:
        message: bytes = encode()
    except orjson.JSONEncodeError as exc:
        raise ArgumentsError(f"bad arguments for '{function}': {exc} (integers must fit in 64 bits)") from None
    if len(message) > limit:
        raise ArgumentsError(
            f"arguments for '{function}' are {len(message):,} bytes encoded; MAX_ARGUMENTS_SIZE is {limit:,}"
        )
    return message


def current_runtime() -> Runtime | None:
    return _current


def session() -> AsyncSession:
    """A database session on the app's database (the one holding run records): `async with session() as s:`."""
    if _current is None:
        raise RuntimeNotStarted("no runtime is running in this process, so there is no database session")
    return AsyncSession(_current.store.engine, expire_on_commit=False)


class Runtime:
    """What every process of an app shares: its functions, its broker and its run store."""

    def __init__(self, app: Application, settings: Settings | None = None) -> None:
        self.app = app
        self.settings = settings or get_settings()
        self.keys = Keys(app.name)
        self.broker = StreamBroker(self.settings.redis_url, self.keys, lease_seconds=self.settings.lease_seconds)
        self.store = RunStore(self.settings.database_url)

    @classmethod
    def from_manifest(cls, path: str | Path = "manifest.yaml", settings: Settings | None = None) -> Runtime:
        return cls(load_application(path), settings)

    async def start(self) -> None:
        """Connect to Redis and the database; a ConfigError names the setting when one is unreachable."""
        global _current
        try:
            await self.broker.startup()
        except (RedisError, OSError) as exc:
            raise ConfigError(
                f"cannot reach Redis at REDIS_URL={redact(self.settings.redis_url)}: {exc}. "
                "Start Redis or set REDIS_URL=redis://host:port/db"
            ) from None
        try:
            await self.store.init()
        except DATABASE_ERRORS as exc:
            raise ConfigError(
                f"cannot use the database at DATABASE_URL={redact(self.settings.database_url)}: "
                f"{str(exc).splitlines()[0]}. Start it or set DATABASE_URL "
                "(sqlite:///path/runs.db or postgresql://user:password@host:5432/db)"
            ) from None
        _current = self

    async def stop(self) -> None:
        global _current
        if _current is self:
            _current = None
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
        history: list[dict[str, Any]] | None = None,
        enqueued_at: float | None = None,
    ) -> bytes:
        """A task message in taskiq's JSON format (what `TaskiqMessage` serializes to)."""
        labels = {"attempt": attempt, "history": history or [], "enqueued_at": enqueued_at or time.time()}
        tracing.inject(labels, function)  # a producer span and its W3C context (`traceparent`), when tracing
        message: dict[str, Any] = {
            "task_id": run_id,
            "task_name": function,
            "labels": labels,
            "labels_types": None,
            "args": [],
            "kwargs": kwargs,
        }
        return orjson.dumps(message)

    async def enqueue(
        self,
        fn: TaskFunction[..., Any],
        arguments: list[dict[str, Any]],
        *,
        delay: float | None = None,
        replay_of: str | None = None,
    ) -> list[str]:
        """Validate, record and queue runs of a task; returns their ids."""
        return [row["id"] for row in await self.submit(fn, arguments, delay=delay, replay_of=replay_of)]

    async def submit(
        self,
        fn: TaskFunction[..., Any],
        arguments: list[dict[str, Any]],
        *,
        delay: float | None = None,
        replay_of: str | None = None,
    ) -> list[dict[str, Any]]:
        """Validate, record and queue runs of a task; returns their records as enqueued.

        A run's record and its message are written side by side (the worker's updates are upserts that
        a late insert never overwrites), so enqueue costs one round trip, not two in a row. The record
        returned is the run as enqueued: by the time the caller reads it, a worker may have moved it on.
        """
        name = fn.name
        if name is None or self.app.tasks.get(name) is not fn:
            raise ValueError(f"{fn!r} is not a task of the app '{self.app.name}' (is it in the manifest?)")
        delay = check_delay(delay)
        validated = [fn.validate(kwargs, for_json=True) for kwargs in arguments]
        limit = self.settings.max_arguments_size
        now = time.time()
        ids = [uuid.uuid4().hex for _ in validated]
        common: dict[str, Any] = {
            "function": name,
            "status": "scheduled" if delay else "queued",
            "attempts": 0,
            "max_attempts": self.app.manifest.retries(name) + 1,
            "last_error": None,
            "enqueued_at": from_timestamp(now),
            "scheduled_for": from_timestamp(now + delay) if delay else None,
            "started_at": None,
            "finished_at": None,
            "result": None,
            "history": [],
            "replay_of": replay_of,
            "version": 0,
            "trace_id": tracing.current_trace_id(),
        }
        pairs = list(zip(ids, validated, strict=True))
        rows = [common | {"id": run_id, "arguments": kwargs} for run_id, kwargs in pairs]
        messages = [
            encode_arguments(name, limit, lambda kw=kwargs, i=run_id: self.message(name, i, kw, enqueued_at=now))
            for run_id, kwargs in pairs
        ]
        inserted, kicked = await asyncio.gather(
            self.store.insert_many(rows), self.broker.kick_many(messages, delay=delay or 0), return_exceptions=True
        )
        if isinstance(kicked, BaseException):
            # the caller's answer is the truth: nothing was queued, so no record may say `queued`
            if not isinstance(inserted, BaseException):
                with contextlib.suppress(Exception):
                    await self.store.delete_many(ids)
            raise EnqueueError(f"nothing was queued: cannot reach Redis ({redact(str(kicked))})") from kicked
        if isinstance(inserted, BaseException):
            # the message is queued and will run; the worker's first update creates the record
            logger.warning("enqueue of %s: queued, but its record could not be written yet (%s)", name, inserted)
        return rows

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
        await self.broker.redis.zrem(self.keys.dead, run.id)
        return Run.model_validate(new_run)

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

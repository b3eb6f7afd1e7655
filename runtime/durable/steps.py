"""`ctx.step`: a durable function's steps. `await ctx.step.run(name, fn, *args, retries=N)` runs `fn(*args)`
once and saves its outcome before the function goes on; when the run is retried (or resumes), a saved step
gives its saved result, or raises its saved `StepFailed`, without calling `fn`.

Names are the key. A name used again in the same run gets its occurrence (`charge`, `charge#2`), counted
when `run` is called, not when the step starts: `asyncio.gather(ctx.step.run("a", fa), ...)` names its steps
in the order they are written, whatever order they run in.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from runtime.durable.events import EVENT_NAME, Events, Wait, finished_event
from runtime.errors import RetryAfter, SkipRetry, StepFailed, StepLimitExceeded
from runtime.store.step_record import StepRecord
from runtime.store.values import utcnow

if TYPE_CHECKING:
    from runtime.store.steps import StepJournal

MAX_NAME = 200  # characters of a step's name (its occurrence suffix aside)
MAX_SLEEP = 366 * 86400  # seconds: a year (and a day), as far as an enqueue's delay
SLEEP_IN_PLACE = 0.05  # seconds: a sleep this short (or what is left of one) is slept without suspending


class Suspended(BaseException):
    """Raised out of a durable function that waits: the worker acks its entry, records the run `waiting`
    (`what`), and sends its message again, due at `until`. A BaseException, so `except Exception` in the
    function does not keep it from waiting."""

    def __init__(self, until: float, what: str, wait: Wait | None = None) -> None:
        super().__init__(what)
        self.until = until
        self.what = what
        self.wait = wait  # an event it waits for (None: a sleep)


@dataclass(frozen=True)
class StepLimits:
    steps: int = 1000  # per run (MAX_STEPS)
    step_bytes: int = 4 * 2**20  # one result as JSON (MAX_STEP_SIZE)
    run_bytes: int = 32 * 2**20  # all of a run's results (MAX_STEPS_SIZE)


class Steps:
    """A run's steps, as `ctx.step`. The worker makes one per attempt; its saved steps are read (in one query)
    when the first step is asked for, so a task that uses no step costs nothing more."""

    def __init__(
        self,
        run_id: str,
        journal: StepJournal | None,
        *,
        retries: int = 3,
        backoff: Callable[[int], float] = lambda attempt: 1.0,
        limits: StepLimits = StepLimits(),
        events: Events | None = None,
        arguments: dict[str, Any] | None = None,
        spawn: Callable[[Any, dict[str, Any], str], Awaitable[None]] | None = None,
    ) -> None:
        self.run_id = run_id
        self._journal = journal
        self._events = events
        self._arguments = arguments or {}
        self._spawn = spawn  # queues a child run (task, arguments, run id), at most once
        self._retries = retries
        self._backoff = backoff  # seconds to wait after failed attempt n of a step
        self._limits = limits
        self._seen: dict[str, int] = {}  # name -> how many times `run` was called with it in this attempt
        self._saved: asyncio.Future[dict[str, StepRecord]] | None = None
        self._count = 0  # steps saved, and being run, in this run
        self._bytes = 0

    def __getstate__(self) -> dict[str, Any]:
        # a sync task's Context goes to its child process without the run store: a step there says so
        return self.__dict__ | {"_journal": None, "_saved": None, "_backoff": None, "_events": None, "_spawn": None}

    def run(self, name: str, fn: Callable[..., Any], /, *args: Any, retries: int | None = None) -> Awaitable[Any]:
        """Run `fn(*args)` (sync or async; its result must be JSON) as the step `name`, once: its result is
        saved before this returns, and is what every later execution of the run gets. A failing `fn` is tried
        `retries` more times (default: the function's retries) with the function's backoff; then `StepFailed`
        is raised here. Pass keyword arguments to `fn` with `functools.partial`."""
        key = self._occurrence(name)
        if not callable(fn):
            raise TypeError(f"step {key!r}: fn must be a function, not {type(fn).__name__}")
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise ValueError(f"step {key!r}: retries must be a whole number from 0, not {retries!r}")
        journal = self._needs_journal(key)
        return self._run(journal, key, fn, args, self._retries if retries is None else retries)

    async def sleep(self, name: str, duration: float | timedelta) -> None:
        """`ctx.sleep`: the run waits `duration` (seconds or a timedelta) holding no worker, then goes on."""
        seconds = _seconds(duration, f"sleep {name!r}: a duration")
        await self._sleep(self._occurrence(name), time.time() + seconds)

    async def sleep_until(self, name: str, when: datetime) -> None:
        """`ctx.sleep_until`: the run waits until `when` (a datetime; naive means UTC), holding no worker."""
        if not isinstance(when, datetime):
            raise TypeError(f"sleep_until {name!r}: when must be a datetime, not {type(when).__name__}")
        aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        if aware.timestamp() - time.time() > MAX_SLEEP:
            raise ValueError(f"sleep_until {name!r}: {when.isoformat()} is over a year ahead")
        await self._sleep(self._occurrence(name), aware.timestamp())

    async def _sleep(self, key: str, until: float) -> None:
        journal = self._needs_journal(key)
        saved = await self._load(journal)
        step = saved.get(key)
        if step is None:  # the first time here: the wake-up time is saved, and is the same on every resume
            now = utcnow()
            step = StepRecord(
                run_id=self.run_id,
                name=key,
                status="sleep",
                result=orjson.dumps(until).decode(),
                started_at=now,
                finished_at=datetime.fromtimestamp(until, UTC).replace(tzinfo=None),
            )
            step = saved[key] = await journal.save(step)
        until = float(orjson.loads(step.result or "0"))
        left = until - time.time()
        if left <= 0:
            return
        if left <= SLEEP_IN_PLACE:
            await asyncio.sleep(left)
            return
        stamp = datetime.fromtimestamp(until, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        raise Suspended(until, f"sleep {key!r} until {stamp}")

    async def wait_for_event(
        self, name: str, *, event: str, match: str | None = None, timeout: float | timedelta = 86400.0
    ) -> Any:
        """`ctx.wait_for_event`: the event's data, or None if none came within `timeout`; see Context."""
        key = self._occurrence(name)
        seconds = _seconds(timeout, f"wait {key!r}: timeout")
        if not isinstance(event, str) or not EVENT_NAME.fullmatch(event):
            raise ValueError(f"wait {key!r}: event {str(event)[:80]!r} is not a dotted name (like briefing.approved)")
        value = None
        if match is not None:
            if match not in self._arguments:
                raise ValueError(f"wait {key!r}: match={match!r} names no argument of this run")
            value = self._arguments[match]
            if not isinstance(value, str | int | float | bool) or value is None:
                raise ValueError(f"wait {key!r}: match={match!r} is a {type(value).__name__}; match a string or number")
        journal = self._needs_journal(key)
        if self._events is None:
            raise RuntimeError(f"wait {key!r}: this Context has no Redis to wait on")
        # a run woken by its event (its steps not read yet in this attempt) asks for the event handed to the
        # wait while its steps are read: one round trip less before it goes on. Asked before the step is saved
        # (its first time here) the answer is None, as it would be after: a wait is registered, and so handed
        # an event, only once it is saved, and registering finds an event handed already.
        member = f"{self.run_id}/{key}"
        handed = None if self._saved is not None else asyncio.ensure_future(self._events.got_for(member))
        if handed is not None:
            handed.add_done_callback(_retrieved)
        step = await self._begin(journal, key, seconds, event=event)
        got = await (handed if handed is not None else self._events.got_for(member)) if step.status == "wait" else None
        if step.status == "succeeded":
            return None if step.result is None else orjson.loads(step.result)
        meta = orjson.loads(step.result or "{}")
        wait = Wait(event, member, int(meta["since"] * 1000), match, value)
        if got is None and time.time() >= meta["until"]:
            got = await self._events.expire(wait)
        elif got is None:
            what = f"event {event!r}" + (f" with {match}={value!r}" if match is not None else "")
            raise Suspended(meta["until"], what, wait)
        done = StepRecord(
            run_id=self.run_id,
            name=key,
            status="succeeded",
            result=orjson.dumps(got).decode(),
            started_at=step.started_at,
            finished_at=utcnow(),
        )
        step = (await self._load(journal))[key] = await journal.resolve(done)
        return None if step.result is None else orjson.loads(step.result)

    async def _begin(self, journal: StepJournal, key: str, seconds: float, **meta: Any) -> StepRecord:
        """The step of a wait (for an event, for a child run): saved when it is first reached, with when it
        began (events from then on count) and when it ends at the latest; the same on every resume."""
        saved = await self._load(journal)
        step = saved.get(key)
        if step is None:
            now = time.time()
            began = StepRecord(
                run_id=self.run_id,
                name=key,
                status="wait",
                result=orjson.dumps({"since": now, "until": now + seconds, **meta}).decode(),
                started_at=utcnow(),
                finished_at=datetime.fromtimestamp(now + seconds, UTC).replace(tzinfo=None),
            )
            step = saved[key] = await journal.save(began)
        return step

    async def invoke(self, name: str, task: Any, /, **arguments: Any) -> Any:
        """`ctx.invoke`: run `task` as a child run and return its result; StepFailed if it failed."""
        key = self._occurrence(name)
        journal = self._needs_journal(key)
        if self._events is None or self._spawn is None:
            raise RuntimeError(f"invoke {key!r}: this Context cannot queue runs")
        if not hasattr(task, "enqueue_many"):
            raise TypeError(f"invoke {key!r}: {task!r:.60} is not a @task")
        child = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.run_id}/{key}").hex
        step = await self._begin(journal, key, MAX_SLEEP, child=child)
        if step.status == "wait":
            meta = orjson.loads(step.result or "{}")
            wait = Wait(finished_event(child), f"{self.run_id}/{key}", int(meta["since"] * 1000), None, None)
            ended = await self._events.got(wait)
            if ended is None:
                await self._spawn(task, arguments, child)  # queued once, however often the parent gets here
                raise Suspended(meta["until"], f"run {child} of {getattr(task, 'name', None) or task!r:.60}", wait)
            failed = ended.get("status") != "succeeded"
            why = f"child run {child} {ended.get('status')}: {ended.get('error') or ''}".strip()
            done = StepRecord(
                run_id=self.run_id,
                name=key,
                status="failed" if failed else "succeeded",
                result=None if failed else orjson.dumps(ended.get("result")).decode(),
                error_type=(ended.get("error_type") or "ChildFailed") if failed else None,
                error=why if failed else None,
                started_at=step.started_at,
                finished_at=utcnow(),
            )
            step = (await self._load(journal))[key] = await journal.resolve(done)
        if step.status == "failed":
            raise StepFailed(key, step.error_type or "ChildFailed", step.error or "")
        return None if step.result is None else orjson.loads(step.result)

    def _needs_journal(self, key: str) -> StepJournal:
        if self._journal is None:
            raise RuntimeError(
                f"step {key!r}: ctx.step works in an async task run by a worker (this Context has no run store)"
            )
        return self._journal

    async def _load(self, journal: StepJournal) -> dict[str, StepRecord]:
        """The run's saved steps, read once per attempt (concurrent steps share the one read)."""
        if self._saved is None:
            self._saved = asyncio.ensure_future(journal.load(self.run_id))
            saved = await self._saved
            self._count = len(saved)
            self._bytes = sum(len(step.result or "") for step in saved.values() if step.status != "sleep")
        return await self._saved

    def _occurrence(self, name: str) -> str:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or "#" in name:
            raise ValueError(f"a step's name is 1 to {MAX_NAME} characters without '#', not {name!r:.80}")
        n = self._seen[name] = self._seen.get(name, 0) + 1
        return name if n == 1 else f"{name}#{n}"

    async def _run(self, journal: StepJournal, key: str, fn: Callable[..., Any], args: Any, retries: int) -> Any:
        step = (await self._load(journal)).get(key)
        if step is None:
            step = await self._execute(journal, key, fn, args, retries)
        if step.status == "failed":
            raise StepFailed(key, step.error_type or "Exception", step.error or "")
        return None if step.result is None else orjson.loads(step.result)

    async def _execute(
        self, journal: StepJournal, key: str, fn: Callable[..., Any], args: Any, retries: int
    ) -> StepRecord:
        if self._count >= self._limits.steps:
            raise StepLimitExceeded(
                f"step {key!r}: run {self.run_id} has {self._limits.steps} steps already (MAX_STEPS); "
                "a long loop of steps belongs in child runs"
            )
        self._count += 1
        started = utcnow()
        attempt = 0
        while True:
            attempt += 1
            try:
                value = await _call(fn, args)
            except RetryAfter:
                raise  # the run starts again later, this step unsaved (the ones before it stay saved)
            except Exception as exc:
                if attempt <= retries and not isinstance(exc, SkipRetry):
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                error = str(exc)[:10_000]
                step = StepRecord(
                    run_id=self.run_id,
                    name=key,
                    status="failed",
                    error_type=type(exc).__name__,
                    error=error,
                    attempts=attempt,
                    started_at=started,
                    finished_at=utcnow(),
                )
                return await journal.save(step)
            text = self._encode(key, value)
            step = StepRecord(
                run_id=self.run_id,
                name=key,
                status="succeeded",
                result=text,
                attempts=attempt,
                started_at=started,
                finished_at=utcnow(),
            )
            saved = await journal.save(step)
            self._bytes += len(saved.result or "")
            return saved

    def _encode(self, key: str, value: Any) -> str:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        try:
            text = orjson.dumps(value).decode()
        except TypeError as exc:
            raise StepLimitExceeded(f"step {key!r} returned what cannot be saved as JSON: {exc}") from None
        if len(text) > self._limits.step_bytes:
            raise StepLimitExceeded(
                f"step {key!r} returned {len(text)} bytes of JSON; a step may save {self._limits.step_bytes} "
                "(MAX_STEP_SIZE): keep big data elsewhere and return its key"
            )
        if self._bytes + len(text) > self._limits.run_bytes:
            raise StepLimitExceeded(
                f"step {key!r}: run {self.run_id}'s steps would take {self._bytes + len(text)} bytes; a run may "
                f"save {self._limits.run_bytes} (MAX_STEPS_SIZE)"
            )
        return text


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A done callback that takes a future's error, so one nobody awaits (its run went another way) is not
    reported as never retrieved."""
    if not future.cancelled():
        future.exception()


def _seconds(value: float | timedelta, what: str) -> float:
    """Seconds (a number or a timedelta) from 0 to a year, or a ValueError that starts with `what`."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_SLEEP:
        raise ValueError(f"{what} is 0 to {MAX_SLEEP} seconds (a year), not {value!r:.40}")
    return float(seconds)


async def _call(fn: Callable[..., Any], args: Any) -> Any:
    """`fn(*args)`: awaited if it is async; in a thread if not, so a blocking step does not stop the worker."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    if inspect.iscoroutinefunction(target):
        return await fn(*args)
    value = await asyncio.to_thread(fn, *args)
    return await value if inspect.isawaitable(value) else value

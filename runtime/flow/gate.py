"""Concurrency and throttle, held at a run's start across every worker (Inngest's order: rate limits, debounce and
batches act at enqueue; these at start).

A run of a limited function passes the gate as it starts. A run limited by concurrency alone takes its slots in
its start mark (runtime/queue/broker.py's start script, one call per queue for the runs starting in that loop
turn): no round trip of its own. The gate's own script (one pipelined call per run) runs only when a limit is full
(it parks the run), for a throttle, and while most runs are parked (then runs are screened as they are read):
- **concurrency** (`concurrency: {limit, key}`, and the app-wide `limits:`): a slot is a member of the limit's
  running set (`running:<limit>`), the run's id scored by when its hold lapses. Its worker renews it (every quarter
  lease), so a SIGKILLed worker's slots lapse within the lease; after a gap in which no worker reached Redis (Redis
  paused) lapsed holds are kept a lease longer, for their owners to renew (the stream leases' fence). A run that
  finds the limit full is *parked*: its stream entry is acked and its message waits in the limit's list
  (`waiting:<limit>`), holding no worker. The run that frees a slot (finished, failed, cancelled, suspended, handed
  back) sends the next waiting one to its queue; a sweep does it for slots that lapsed. Per key, so one key's
  backlog waits in its own list and other keys' runs go by it (round robin across keys).
- **throttle** (`throttle: {limit, period, burst, key}`): GCRA with reservations: a run over the rate reserves its
  turn and is sent to its queue's delayed set for then (in order, never dropped); its message says it has a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from runtime.errors import ConfigError
from runtime.flow import gate_scripts
from runtime.flow.paths import batch_items, key_value
from runtime.queue.broker import FULL, STARTED
from runtime.queue.held_connection import HeldConnection, packed, usable
from runtime.queue.keys import Keys
from runtime.queue.redis_client import is_cluster

logger = logging.getLogger("runtime.flow")

RUN, PARKED, DELAYED, LOST, MAYBE = "run", "parked", "delayed", "lost", "maybe"
PARKING_READ = 200  # entries read at once while most of them are parked
SWEEP_EVERY = 1.0  # seconds between a worker's sweeps of waiting lists whose slots lapsed
WAITERS_SEEN = 0.01  # park rate above which runs are taken to wait for slots: an ended run frees its own at once


@dataclass(frozen=True)
class Slot:
    """One concurrency limit of a function: `name` names its keys (`<function>:<i>` or `@<named limit>`)."""

    name: str
    limit: int
    key: str | None


@dataclass(frozen=True)
class Throttle:
    interval: float  # seconds between starts: period / limit
    tolerance: float  # burst x interval
    key: str | None


@dataclass(frozen=True)
class StartLimits:
    slots: tuple[Slot, ...]
    throttle: Throttle | None
    batch: bool  # keys are read from the run's first item

    def arguments(self, kwargs: dict[str, Any]) -> Mapping[str, Any]:
        if not self.batch:
            return kwargs
        return next(iter(batch_items(kwargs)), {})  # a batch run's keys: its first item's


def start_limits(manifest: Any) -> dict[str, StartLimits]:
    """The functions with limits held at start, from the manifest (runtime/app/manifest.py's Manifest)."""
    out = {}
    named = manifest.limits or {}
    for name, fn in manifest.tasks().items():
        spec = fn.task
        slots = [Slot(f"{name}:{i}", c.limit, c.key) for i, c in enumerate(spec.concurrency or [])]
        slots += [Slot(f"@{limit}", named[limit].concurrency, None) for limit in spec.limits or []]
        throttle = None
        if spec.throttle is not None:
            interval = spec.throttle.period / spec.throttle.limit
            throttle = Throttle(interval, spec.throttle.burst * interval, spec.throttle.key)
        if slots or throttle is not None:
            out[name] = StartLimits(tuple(slots), throttle, spec.batch is not None)
    return out


@dataclass
class Held:
    """The slots a running run holds: its id, and (running set, waiting list, limit) per slot."""

    run_id: str
    slots: list[tuple[str, str, int]]


class Gate:
    def __init__(self, redis: Redis, keys: Keys, limits: dict[str, StartLimits], lease: float, consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self.lease_ms = int(lease * 1000)
        self.consumer = consumer
        self.held: dict[str, Held] = {}  # delivery key -> the slots its run holds
        self.admitted: set[str] = set()  # delivery keys that passed the gate as they were read
        self.ending: set[str] = set()  # delivery keys of ended runs whose slots are freed with their ack
        self.delayed = asyncio.Event()  # set when a run was sent to wait for its turn (the delayed loop looks again)
        self.park_rate = 0.0  # of the runs that met the gate lately, the share parked (a moving average)
        self._admit = redis.register_script(gate_scripts.ADMIT)
        self._release = redis.register_script(gate_scripts.RELEASE)
        self._sweep = redis.register_script(gate_scripts.SWEEP)
        # scripts asked for in one loop turn (admits, releases) go to Redis in one pipeline of EVALSHAs
        self._calls: list[tuple[Any, list[str], list[Any], asyncio.Future[list[Any]] | None]] = []
        self._freed: list[Held] = []  # holds released in this loop turn: one script call frees them all
        self._flushing: asyncio.Task[None] | None = None
        self.writes = HeldConnection(redis)  # the releases, packed by hand (runtime/queue/held_connection.py)
        # the keys every gate script takes first
        self.common = [self.keys.flow(name) for name in ("clock", "fence", "waiting", "limits")]

    async def admit(self, delivery: Any, message: Any, acquire: bool = True) -> tuple[str, float]:
        """RUN (its slots are held), PARKED (acked; it waits for a slot), DELAYED (acked; sent again at its turn,
        the Unix time returned) or LOST (the entry is no longer this worker's). Without `acquire` (read ahead, for
        no free runner): PARKED when a limit is full, else MAYBE (it passes the gate when a runner takes it)."""
        limits = self.limits[message.task_name]
        arguments = limits.arguments(message.kwargs)
        queue = self.keys.queue(delivery.queue)
        labels = message.labels
        slots = self._slots(limits, arguments)
        throttle = limits.throttle
        tat = self.keys.flow("clock")
        if throttle is not None:
            tat = self.keys.flow(f"throttle:{message.task_name}:{_value(arguments, throttle.key)}")
        keys = [*self.common, queue.stream, queue.started, queue.delayed, tat]
        keys += [key for (running, waiting), _ in slots for key in (running, waiting)]
        raw = delivery.data
        args: list[Any] = [
            self.keys.group,
            self.consumer,
            self.lease_ms,
            delivery.entry_id,
            message.task_id,
            raw,  # labelled `parked` or `turn` in the script, only if it is set aside
            "",
            0 if throttle is None else int(throttle.interval * 1000),
            0 if throttle is None else int(throttle.tolerance * 1000),
            "1" if labels.get("turn") else "0",
            "1" if labels.get("parked") else "0",
            "1" if acquire else "0",
            *(limit for _, limit in slots),
        ]
        verdict, detail = await self._pipelined(keys, args)
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        self.park_rate = 0.9 * self.park_rate + 0.1 * (verdict == PARKED)
        if verdict == RUN and slots:
            self._hold(delivery.key, message.task_id, slots)
        elif verdict == DELAYED:
            self.delayed.set()
        return verdict, float(detail) / 1000 if verdict == DELAYED else 0.0

    async def start(
        self, delivery: Any, message: Any, mark: Callable[[Sequence[tuple[str, int]]], Awaitable[int]]
    ) -> int | None:
        """Take a limited run through the gate and `mark` it started (runtime/queue/broker.py's mark_started, with
        the run's slots: (running set, limit)). A run limited only by concurrency takes its slots in its start
        mark, in the round trip it makes anyway; only when a limit is full (or for a throttle) does the gate's
        own script run (it parks the run, or drops lapsed holds first). Returns the start mark's verdict, or None
        when the run waits for a slot or its turn (acked by the gate) or is another worker's now."""
        limits = self.limits[message.task_name]
        if self.passed(delivery.key):
            return await mark(())
        if limits.throttle is None:
            slots = self._slots(limits, limits.arguments(message.kwargs))
            verdict = await mark([(running, limit) for (running, _), limit in slots])
            if verdict != FULL:  # a full limit's run is counted by the admit below (parked, or run)
                self.park_rate *= 0.9
                if verdict == STARTED:
                    self._hold(delivery.key, message.task_id, slots)
                return verdict
        gated, _ = await self.admit(delivery, message)
        if gated != RUN:
            return None
        return await mark(())

    async def screen(self, deliveries: list[Any], free: int, decode: Any) -> list[Any]:
        """While most runs are parked (a key's backlog), runs of limited functions as they are read, in one round
        trip: those for free runners pass the gate now, the others are parked at once when their limit is full (so
        the backlog is set aside quickly; otherwise their runner takes them through the gate). Otherwise every
        runner takes its run through the gate as it starts it (`start`). Returns the deliveries to hand to the
        runners."""
        if not self.parking:
            return deliveries  # few are parked: each runner takes its run through the gate as it starts it
        checks: list[Coroutine[Any, Any, tuple[str, float]] | None] = []
        for delivery in deliveries:
            try:
                message = decode(delivery.data) if delivery.data is not None and delivery.started is None else None
            except Exception:
                message = None
            if message is None or message.task_name not in self.limits:
                checks.append(None)
                continue
            checks.append(self.admit(delivery, message, acquire=free > 0))
            free -= 1
        verdicts = await asyncio.gather(*(c for c in checks if c is not None), return_exceptions=True)
        answers = iter(verdicts)
        out = []
        for delivery, check in zip(deliveries, checks, strict=True):
            verdict = next(answers) if check is not None else (MAYBE, 0.0)
            if isinstance(verdict, BaseException) or verdict[0] == MAYBE:
                out.append(delivery)  # the runner takes it through the gate (or hands it back)
            elif verdict[0] == RUN:
                self.admitted.add(delivery.key)
                out.append(delivery)
        return out

    @property
    def parking(self) -> bool:
        """Most runs that met the gate lately were parked (a key's backlog): screen and read ahead many at once."""
        return self.park_rate > 0.5

    def read_ahead(self, room: int) -> int:
        """How many entries to read: while most are parked (a key's backlog), many at once, to set it aside fast."""
        return max(room, PARKING_READ) if self.parking else room

    def passed(self, delivery_key: str) -> bool:
        """Whether this entry passed the gate as it was read (once)."""
        if delivery_key in self.admitted:
            self.admitted.discard(delivery_key)
            return True
        return False

    def _slots(self, limits: StartLimits, arguments: Mapping[str, Any]) -> list[tuple[tuple[str, str], int]]:
        """Each concurrency limit of a run: ((running set, waiting list), limit)."""
        return [(self._slot_keys(slot, arguments), slot.limit) for slot in limits.slots]

    def _hold(self, delivery_key: str, run_id: str, slots: list[tuple[tuple[str, str], int]]) -> None:
        self.held[delivery_key] = Held(run_id, [(running, waiting, limit) for (running, waiting), limit in slots])

    def _slot_keys(self, slot: Slot, arguments: Mapping[str, Any]) -> tuple[str, str]:
        name = slot.name if slot.name.startswith("@") else f"{slot.name}:{_value(arguments, slot.key)}"
        return self.keys.flow(f"running:{name}"), self.keys.flow(f"waiting:{name}")

    async def _pipelined(self, keys: list[str], args: list[Any]) -> list[Any]:
        """Admit, with the other runs starting in this loop turn, in one round trip."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._call(self._admit, keys, args, future)
        return await future

    def _call(self, script: Any, keys: list[str], args: list[Any], future: asyncio.Future[list[Any]] | None) -> None:
        self._calls.append((script, keys, args, future))
        self._schedule()

    def _schedule(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)
        while self._calls or self._freed:
            batch, self._calls = self._calls, []
            freed, self._freed = self._freed, []
            if freed and not batch and usable(self.redis):
                await self._free(freed)  # a loop turn's releases alone (most turns): one packed call
                continue
            if freed:
                batch.append((self._release, *self._release_call(freed), None))
            try:
                replies = await self._evalshas(batch)
            except Exception as exc:
                replies = [exc] * len(batch)
            for (*_, future), reply in zip(batch, replies, strict=True):
                if future is None:
                    if isinstance(reply, BaseException):
                        _not_freed(reply)
                elif future.done():
                    continue
                elif isinstance(reply, BaseException):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def _release_call(self, freed: list[Held]) -> tuple[list[str], list[Any]]:
        """The RELEASE script's keys and arguments for these holds."""
        keys = self.common + [key for held in freed for running, waiting, _ in held.slots for key in (running, waiting)]
        args: list[Any] = [self.lease_ms]
        for held in freed:
            args += [held.run_id, len(held.slots), *(limit for *_, limit in held.slots)]
        return keys, args

    async def _free(self, freed: list[Held]) -> None:
        """The RELEASE script over these holds, packed by hand on the gate's own connection: redis-py's path for
        one script call (its pool, its retry wrapper, packing each argument) cost more than the script."""
        keys, args = self._release_call(freed)
        names = (key.encode() for key in keys)
        values = (str(arg).encode() for arg in args)
        try:
            await self.writes.evalsha(
                self._release, packed(b"EVALSHA", self._release.sha.encode(), b"%d" % len(keys), *names, *values)
            )
        except Exception as exc:
            _not_freed(exc)

    async def _evalshas(self, batch: list[tuple[Any, list[str], list[Any], Any]]) -> list[Any]:
        """The batch's scripts by their SHA in one pipeline (redis-py's Script in a pipeline asks SCRIPT EXISTS
        first: a round trip more); a Redis without them (restarted) gets them loaded, and the batch is sent again
        (a script Redis did not know did not run). One call alone (most often a loop turn's releases) goes without
        a pipeline, which costs more than the call."""
        if len(batch) == 1:
            script, keys, args, _ = batch[0]
            try:
                return [await script(keys=keys, args=args)]  # redis-py loads it if Redis does not know it
            except Exception as exc:
                return [exc]
        for _ in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for script, keys, args, _ in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            if not any(isinstance(reply, NoScriptError) for reply in replies):
                return replies
            for script in {id(script): script for script, *_ in batch}.values():
                await self.redis.script_load(script.script)
        return replies

    def finished(self, delivery_key: str) -> None:
        """The run of this entry ended (its record is saved and its entry acked next). While runs wait for slots
        (some were parked here lately) its slots are freed now; otherwise with its ack (`acked`), in one call per
        commit instead of one per loop turn, while no run waits for them."""
        if self.park_rate > WAITERS_SEEN:
            self.release(delivery_key)
        elif delivery_key in self.held:
            self.ending.add(delivery_key)

    def acked(self, delivery_keys: Sequence[str]) -> None:
        """These entries are acked: free the slots their ended runs still hold."""
        for key in delivery_keys:
            if key in self.ending:
                self.release(key)

    async def close(self, timeout: float = 2.0) -> None:
        """A stopping worker, after its last commit: free the slots of ended runs whose ack did not go out (they
        run again elsewhere, taking a slot then), and wait for the releases to be sent."""
        for key in list(self.ending):
            self.release(key)
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._flushing), timeout)

    def release(self, delivery_key: str) -> None:
        """The run of this entry holds its slots no more (it ended, waits, or was handed back): free them, and send
        the next waiting runs to their queues, with the other calls of this loop turn. If Redis is away, the holds
        lapse instead."""
        self.admitted.discard(delivery_key)
        self.ending.discard(delivery_key)
        held = self.held.pop(delivery_key, None)
        if held is not None:
            self._freed.append(held)
            self._schedule()

    async def loop(self) -> None:
        """Renew the holds of this worker's runs (every quarter lease) and sweep lapsed slots (every second)."""
        renewed = 0.0
        while True:
            loop_time = asyncio.get_running_loop().time()
            with contextlib.suppress(Exception):
                if loop_time - renewed >= self.lease_ms / 4000:
                    renewed = loop_time
                    await self.renew()
                await self._sweep(keys=self.common, args=[self.lease_ms])
            await asyncio.sleep(min(SWEEP_EVERY, self.lease_ms / 4000))

    async def renew(self) -> None:
        holds = list(self.held.values())
        if not holds:
            return
        now_ms = int((await self.redis.time())[0] * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for held in holds:
                for running, _, _ in held.slots:
                    pipe.zadd(running, {held.run_id: now_ms + self.lease_ms}, xx=True)
            await pipe.execute()


def _not_freed(exc: BaseException) -> None:
    logger.warning("cannot free a concurrency slot (%s); it lapses within the lease", exc)


def _value(arguments: Mapping[str, Any], path: str | None) -> str:
    try:
        return key_value(arguments, path)
    except Exception:  # checked at enqueue; a message from before the key was declared counts under ""
        return ""


def gate_for(runtime: Any, consumer: str) -> Gate | None:
    """The gate of a worker of this runtime (runtime/app/connections.py's Runtime), None when no function has a
    limit held at start. Its scripts touch a queue's stream and the flow keys at once: one Redis, not a Cluster."""
    limits = start_limits(runtime.app.manifest)
    if not limits:
        return None
    if is_cluster(runtime.broker.redis):
        raise ConfigError(
            f"{', '.join(limits)}: concurrency and throttle need one Redis (or a Sentinel set), not a Redis Cluster"
        )
    return Gate(runtime.broker.redis, runtime.keys, limits, runtime.settings.lease_seconds, consumer)

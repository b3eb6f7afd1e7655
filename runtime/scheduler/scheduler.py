"""The scheduler: enqueues cron functions on time (UTC), one instance at a time.

A Redis lock makes a second scheduler wait instead of firing twice; the last fire time per function
is kept in Redis, so a restart neither repeats nor (within the lock's lifetime) misses a minute.
A fire's run id is derived from the function and the due time, and it is queued under a per-fire Redis
guard in the same script as its message: a fire whose enqueue failed is tried again on the next tick,
and even two schedulers at once queue it exactly once. Each schedule is handled on its own, so one
that fails never holds up the others.
It also moves due delayed tasks, prunes finished runs past their retention (the manifest's `retention`
per function, `dead_retention` for failed runs and their dead letters), warns when the dead-letter list
passes `dead_letter_alert`, settles runs whose message Redis lost (runtime/scheduler/reconciler.py), and
queues the runs accepted while Redis could not be reached (runtime/scheduler/outbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.app.connections import Runtime
from runtime.ops.health import HealthServer, Heartbeat, dependencies
from runtime.scheduler.outbox import Outbox
from runtime.scheduler.reconciler import Reconciler
from runtime.store.values import utcnow
from runtime.worker.middleware.dead_letters import DeadLetterAlert

logger = logging.getLogger("runtime.scheduler")

ALERT_SECONDS = 5.0  # how often the leader counts the dead letters against dead_letter_alert

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class Scheduler:
    def __init__(self, runtime: Runtime, lock_seconds: float = 15.0) -> None:
        self.runtime = runtime
        self.redis = runtime.broker.redis
        self.keys = runtime.keys
        self.lock_ms = int(lock_seconds * 1000)
        self.identity = runtime.broker.consumer
        self.stopping = asyncio.Event()
        self.heartbeat = Heartbeat()
        self.leader = False
        self._renew = self.redis.register_script(_RENEW)
        self.reconciler = Reconciler(runtime)
        self.outbox = Outbox(runtime)
        self.dead_letter_alert = DeadLetterAlert(runtime)
        self.failing: dict[str, str] = {}  # schedule -> its last error (logged once until it changes)
        self.schedules = {
            name: spec.task.schedule
            for name, spec in runtime.app.manifest.tasks().items()
            if spec.task is not None and spec.task.schedule
        }

    def stop(self) -> None:
        self.stopping.set()

    async def run(self, health_port: int | None = None, host: str = "0.0.0.0") -> None:
        health = None
        if health_port:
            health = HealthServer(self._ready, self._live)
            await health.start(host, health_port)
        logger.info(
            "scheduler ready: %d cron function(s): %s",
            len(self.schedules),
            ", ".join(f"{n} '{s}'" for n, s in self.schedules.items()) or "none",
        )
        next_prune = next_reconcile = next_alert = 0.0
        try:
            while not self.stopping.is_set():
                self.heartbeat.beat()
                try:
                    await self._hold_lock()
                except Exception as exc:
                    logger.error("scheduler cannot reach Redis: %s", exc)
                    self.outbox.redis_unreachable()  # enqueues elsewhere may be keeping runs for later
                if self.leader:
                    await self._guarded("cron", self.tick(datetime.now(UTC)))
                    await self._guarded("moving delayed tasks", self.runtime.broker.move_due())
                    await self._guarded("queueing unsent runs", self.outbox.look())
                    if time.monotonic() > next_prune:
                        next_prune = time.monotonic() + 600
                        await self._guarded("pruning", self._prune())
                    if time.monotonic() > next_alert:
                        next_alert = time.monotonic() + ALERT_SECONDS
                        await self._guarded("checking the dead letters", self.dead_letter_alert.check())
                    if time.monotonic() > next_reconcile:
                        next_reconcile = time.monotonic() + self.runtime.settings.reconcile_seconds
                        await self._guarded("reconciling", self.reconciler.reconcile())
                wait = self.until_next_due(datetime.now(UTC)) if self.leader else 2.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), wait)
        finally:
            if self.leader:
                with contextlib.suppress(Exception):
                    if await self.redis.get(self.keys.scheduler_lock) == self.identity.encode():
                        await self.redis.delete(self.keys.scheduler_lock)
            if health:
                await health.stop()

    async def _guarded(self, what: str, step: Any) -> None:
        try:
            await step
        except Exception as exc:
            logger.error("scheduler: %s failed: %s", what, exc)

    def until_next_due(self, now: datetime, cap: float = 0.5) -> float:
        """Seconds to sleep: up to `cap`, or until just after the next due second (fires on time)."""
        wait = cap
        if self.schedules:
            from croniter import croniter  # here: a scheduler of an app with no schedule never imports it
        for expression in self.schedules.values():
            try:
                upcoming = croniter(expression, now).get_next(datetime)
            except Exception:
                continue
            wait = min(wait, (upcoming - now).total_seconds() + 0.005)
        return max(wait, 0.005)

    def fire_id(self, name: str, due: datetime) -> str:
        """The run id of one fire: the same on every retry and in every scheduler."""
        return uuid.uuid5(uuid.NAMESPACE_URL, f"cron:{self.runtime.app.name}:{name}:{due.isoformat()}").hex

    async def _hold_lock(self) -> None:
        if self.leader:
            self.leader = bool(await self._renew(keys=[self.keys.scheduler_lock], args=[self.identity, self.lock_ms]))
            if not self.leader:
                logger.warning("scheduler lost its lock; another scheduler took over")
        else:
            self.leader = bool(await self.redis.set(self.keys.scheduler_lock, self.identity, nx=True, px=self.lock_ms))
            if self.leader:
                logger.info("scheduler %s holds the lock", self.identity)

    async def tick(self, now: datetime) -> list[str]:
        """Enqueue every cron function whose latest due time has not been enqueued yet."""
        fired = []
        for name in self.schedules:
            try:
                run_id = await self._fire(name, now)
            except Exception as exc:
                if self.failing.get(name) != str(exc):
                    logger.error("cron %s failed (tried again next tick): %s", name, exc, extra={"function": name})
                self.failing[name] = str(exc)
                continue
            self.failing.pop(name, None)
            if run_id is not None:
                fired.append(run_id)
        return fired

    async def _fire(self, name: str, now: datetime) -> str | None:
        # the latest due time at or before now: cron times are whole seconds, so from now's whole
        # second + 1 s, get_prev (strictly before its start) can return that second but never a later one
        from croniter import croniter

        base = now.replace(microsecond=0) + timedelta(seconds=1)
        due = croniter(self.schedules[name], base).get_prev(datetime)
        key = self.keys.cron_last(name)
        last = await self.redis.get(key)
        if last is None:
            # first start: remember this minute, fire from the next one (as cron does)
            await self.redis.set(key, due.timestamp())
            return None
        if due.timestamp() <= float(last):
            return None
        run_id = self.fire_id(name, due)
        fn = self.runtime.app.tasks[name]
        # the guard outlives any retry of this fire; the last-fire time is stored only once it is queued
        guard = self.keys.queue(self.runtime.queue_of(fn)).fire_guard(name, int(due.timestamp()))
        queued = await self.runtime.submit(fn, [{}], run_ids=[run_id], guard=guard)
        await self.redis.set(key, due.timestamp())
        if not queued:
            return None  # another scheduler fired it
        logger.info("cron %s due %s: run %s", name, due.isoformat(), run_id, extra={"function": name, "run_id": run_id})
        return run_id

    async def _prune(self) -> None:
        """Forget succeeded (and cancelled, and skipped) runs after their function's `retention`, and failed
        runs, with their dead letters, after `dead_retention`."""
        manifest = self.runtime.app.manifest
        store, now = self.runtime.store, utcnow()
        finished = ("succeeded", "cancelled", "skipped")
        own = {
            name: spec.task.retention
            for name, spec in manifest.tasks().items()
            if spec.task is not None and spec.task.retention is not None
        }
        removed = 0
        for name, keep in own.items():
            removed += len(await store.prune(now - timedelta(seconds=keep), statuses=finished, functions=[name]))
        cutoff = now - timedelta(seconds=manifest.defaults.retention)
        removed += len(await store.prune(cutoff, statuses=finished, except_functions=list(own)))
        dead_cutoff = now - timedelta(seconds=manifest.defaults.dead_retention)
        failed = await store.prune(dead_cutoff, statuses=("failed",))
        await self.runtime.forget_dead_letters(failed)
        if removed or failed:
            logger.info("pruned %d finished run(s) past their retention and %d failed run(s)", removed, len(failed))

    async def _live(self) -> tuple[int, dict[str, Any]]:
        ok = self.heartbeat.fresh()
        return (200 if ok else 503), {"status": "ok" if ok else "stuck", "leader": self.leader}

    async def _ready(self) -> tuple[int, dict[str, Any]]:
        deps = await dependencies(self.runtime)
        ok = self.heartbeat.fresh() and all(v == "ok" for v in deps.values())
        return (200 if ok else 503), {"status": "ok" if ok else "unavailable", "leader": self.leader, **deps}

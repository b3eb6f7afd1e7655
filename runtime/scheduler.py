"""The scheduler: enqueues cron functions on time (UTC), one instance at a time.

A Redis lock makes a second scheduler wait instead of firing twice; the last fire time per function
is kept in Redis, so a restart neither repeats nor (within the lock's lifetime) misses a minute.
It also moves due delayed tasks and prunes old succeeded runs (RESULT_TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from runtime.connections import Runtime
from runtime.health import HealthServer, Heartbeat, dependencies
from runtime.runs import utcnow

logger = logging.getLogger("runtime.scheduler")

# KEYS: the cron's last-fire key. ARGV: due time. 1 = this scheduler fires it (atomic: never two),
# 0 = already fired; -1 = first start (remembered, fired from the next due time on, as cron does).
_CLAIM_FIRE = """
local last = redis.call('GET', KEYS[1])
if not last then redis.call('SET', KEYS[1], ARGV[1]); return -1 end
if tonumber(ARGV[1]) > tonumber(last) then redis.call('SET', KEYS[1], ARGV[1]); return 1 end
return 0
"""
# KEYS: the last-fire key. ARGV: the due time that failed, the previous one: undo a claim whose enqueue failed
_UNDO_FIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) end
return 0
"""

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
        self._claim_fire = self.redis.register_script(_CLAIM_FIRE)
        self._undo_fire = self.redis.register_script(_UNDO_FIRE)
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
        next_prune = 0.0
        try:
            while not self.stopping.is_set():
                self.heartbeat.beat()
                try:
                    await self._hold_lock()
                    if self.leader:
                        await self.tick(datetime.now(UTC))
                        await self.runtime.broker.move_due()
                        if time.monotonic() > next_prune:
                            next_prune = time.monotonic() + 600
                            await self._prune()
                except Exception as exc:
                    logger.error("scheduler tick failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 0.5 if self.leader else 2.0)
        finally:
            if self.leader:
                with contextlib.suppress(Exception):
                    if await self.redis.get(self.keys.scheduler_lock) == self.identity.encode():
                        await self.redis.delete(self.keys.scheduler_lock)
            if health:
                await health.stop()

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
        """Enqueue every cron function whose latest due time has not been enqueued yet.

        A fire is claimed atomically in Redis before its enqueue (two schedulers never both fire it) and
        given back if the enqueue fails (the next tick retries it); one failing schedule never stops another.
        """
        fired = []
        for name, expression in self.schedules.items():
            try:
                run_id = await self._fire(name, expression, now)
            except Exception as exc:
                logger.error(
                    "cron %s: cannot fire it now (%s); retrying next tick", name, exc, extra={"function": name}
                )
                continue
            if run_id is not None:
                fired.append(run_id)
        return fired

    async def _fire(self, name: str, expression: str, now: datetime) -> str | None:
        # get_prev is strictly before its start: from now + 1 µs, a time due exactly now counts, none later
        due = croniter(expression, now + timedelta(microseconds=1)).get_prev(datetime).timestamp()
        key = self.keys.cron_last(name)
        previous = await self.redis.get(key)
        if int(await self._claim_fire(keys=[key], args=[repr(due)])) != 1:
            return None
        try:
            [run_id] = await self.runtime.enqueue(self.runtime.app.tasks[name], [{}])
        except BaseException:
            await self._undo_fire(keys=[key], args=[repr(due), previous or repr(due - 1)])
            raise
        logger.info(
            "cron %s due %s: run %s",
            name,
            datetime.fromtimestamp(due, UTC).isoformat(),
            run_id,
            extra={"function": name, "run_id": run_id},
        )
        return run_id

    async def _prune(self) -> None:
        cutoff = utcnow() - timedelta(seconds=self.runtime.settings.result_ttl)
        removed = await self.runtime.store.prune(cutoff)
        if removed:
            logger.info("pruned %d succeeded run(s) older than %s", removed, cutoff.isoformat())

    async def _live(self) -> tuple[int, dict[str, Any]]:
        ok = self.heartbeat.fresh()
        return (200 if ok else 503), {"status": "ok" if ok else "stuck", "leader": self.leader}

    async def _ready(self) -> tuple[int, dict[str, Any]]:
        deps = await dependencies(self.runtime)
        ok = self.heartbeat.fresh() and all(v == "ok" for v in deps.values())
        return (200 if ok else 503), {"status": "ok" if ok else "unavailable", "leader": self.leader, **deps}

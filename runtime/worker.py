"""The worker: reads tasks from the stream, runs up to `concurrency` at once, and acks them when done.

    fetch ──> queue ──> N runners: pre_execute → run (timeout) → on_error → post_execute ──> commit
                                                                        (records flushed, then acked)

Every entry this worker holds (queued, running or waiting for its ack) is under a lease it renews, so
no other worker takes it; entries whose lease lapsed (a dead worker's) are reclaimed here on a timer.
On SIGTERM it stops fetching, gives back what it has not started, lets running tasks finish within the
shutdown timeout, and gives back the rest, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import orjson
from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from runtime.broker import Delivery
from runtime.connections import Runtime
from runtime.errors import TaskTimeout, UnknownFunction
from runtime.health import HealthServer, Heartbeat, dependencies
from runtime.manifest import format_duration
from runtime.middleware import DeadLetterMiddleware, RetryMiddleware, RunRecordMiddleware, TaskLogMiddleware
from runtime.sync_pool import SyncPool

logger = logging.getLogger("runtime.worker")

PREFETCH_FACTOR = 2  # a worker reads ahead up to concurrency x this many tasks (KEDA's target uses it)
MAX_UNACKED = 2000  # finished tasks whose records and acks are not written yet (the database is slow)


async def _call(hook: Callable[..., Any], *args: Any) -> Any:
    value = hook(*args)
    return await value if inspect.isawaitable(value) else value


def _overriding(middlewares: list[TaskiqMiddleware], hook: str) -> list[Callable[..., Any]]:
    """The middlewares' own `hook` methods, skipping the base class's no-ops (resolved once)."""
    base = getattr(TaskiqMiddleware, hook)
    return [getattr(m, hook) for m in middlewares if getattr(type(m), hook) is not base]


class Worker:
    def __init__(self, runtime: Runtime, concurrency: int | None = None) -> None:
        self.runtime = runtime
        self.broker = runtime.broker
        manifest = runtime.app.manifest
        self.concurrency = concurrency or manifest.defaults.concurrency
        self.prefetch = self.concurrency * PREFETCH_FACTOR  # running + read ahead
        self.lease = runtime.settings.lease_seconds
        max_attempts = {name: manifest.retries(name) + 1 for name in manifest.tasks()}
        self.records = RunRecordMiddleware(runtime.store, max_attempts)
        self.dead_letters = DeadLetterMiddleware(runtime)
        self.middlewares: list[TaskiqMiddleware] = [
            RetryMiddleware(runtime),
            self.records,
            self.dead_letters,
            TaskLogMiddleware(max_attempts),
        ]
        self.pre_execute = _overriding(self.middlewares, "pre_execute")
        self.on_error = _overriding(self.middlewares, "on_error")
        self.post_execute = _overriding(self.middlewares, "post_execute")
        self.sync_pool = SyncPool(self.concurrency)
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.held: dict[str, Delivery] = {}  # entry id -> delivery, until acked or released
        self.running: dict[str, asyncio.Task[None]] = {}
        self.to_ack: list[str] = []
        self.dirty = asyncio.Event()  # run records or acks to commit
        self.room = asyncio.Event()
        self.stopping = asyncio.Event()
        self.heartbeat = Heartbeat()
        self.redis_ok = True
        self.done_count = 0

    # --- the loops ---------------------------------------------------------------------------------

    async def run(self, health_port: int | None = None, host: str = "0.0.0.0") -> None:
        """Run until `stop()`; then drain within the shutdown timeout."""
        health = None
        if health_port:
            health = HealthServer(self._ready, self._live)
            port = await health.start(host, health_port)
            logger.info("worker health on http://%s:%d/health", host, port)
        for middleware in self.middlewares:
            await _call(middleware.startup)
        logger.info(
            "worker %s ready: %d tasks, concurrency %d",
            self.broker.consumer,
            len(self.runtime.app.tasks),
            self.concurrency,
        )
        if any(not fn.is_async for fn in self.runtime.app.tasks.values()):
            self.sync_pool.warm([fn.ref for fn in self.runtime.app.tasks.values() if not fn.is_async])
        async with anyio.create_task_group() as background:
            background.start_soon(self._lease_loop)
            background.start_soon(self._delayed_loop)
            background.start_soon(self._commit_loop)
            runners = [asyncio.create_task(self._runner()) for _ in range(self.concurrency)]
            await self._fetch_loop()
            await self._drain(runners)
            background.cancel_scope.cancel()
        await self._commit()
        for middleware in self.middlewares:
            await _call(middleware.shutdown)
        self.sync_pool.close()
        if health:
            await health.stop()
        logger.info("worker %s stopped after %d tasks", self.broker.consumer, self.done_count)

    def stop(self) -> None:
        self.stopping.set()
        self.room.set()

    async def _fetch_loop(self) -> None:
        next_reclaim = 0.0
        while not self.stopping.is_set():
            self.heartbeat.beat()
            waiting_ack = len(self.to_ack)
            room = min(self.prefetch - (len(self.held) - waiting_ack), MAX_UNACKED - waiting_ack)
            if room <= 0:
                self.room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.room.wait(), 1.0)
                continue
            try:
                deliveries = []
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + self.lease / 4
                    deliveries = await self.broker.reclaim(room)
                    for delivery in deliveries:
                        logger.warning("reclaimed entry %s from a worker that stopped answering", delivery.entry_id)
                if not deliveries:
                    # wait for new tasks only when there is nothing to run (BLOCK 0 would wait forever)
                    block_ms = 1 if self.queue.qsize() else int(min(1.0, self.lease / 4) * 1000)
                    deliveries = await self.broker.read(room, block_ms=block_ms)
                self.redis_ok = True
            except Exception as exc:  # Redis away: keep trying, and say so once
                if self.redis_ok:
                    logger.error("cannot read tasks from Redis: %s; retrying", exc)
                self.redis_ok = False
                await asyncio.sleep(1.0)
                continue
            for delivery in deliveries:
                if delivery.entry_id not in self.held:
                    self.held[delivery.entry_id] = delivery
                    self.queue.put_nowait(delivery)

    async def _runner(self) -> None:
        while True:
            delivery = await self.queue.get()
            task = asyncio.current_task()
            assert task is not None
            self.running[delivery.entry_id] = task
            try:
                await self._execute(delivery)
            except Exception:
                # the run could not be completed here (e.g. Redis went away mid-way): give it back
                logger.exception("could not complete entry %s; handing it back", delivery.entry_id)
                await self._release([delivery.entry_id])
            finally:
                self.running.pop(delivery.entry_id, None)

    async def _drain(self, runners: list[asyncio.Task[None]]) -> None:
        """Stop: give back queued entries, wait for running ones, give back those still running."""
        queued = []
        while not self.queue.empty():
            queued.append(self.queue.get_nowait())
        await self._release([d.entry_id for d in queued])
        if self.running:
            logger.info(
                "stopping: waiting up to %s for %d running task(s)",
                format_duration(self.runtime.settings.shutdown_timeout),
                len(self.running),
            )
        deadline = time.monotonic() + self.runtime.settings.shutdown_timeout
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        unfinished = list(self.running)
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        if unfinished:
            logger.warning("stopping: %d task(s) did not finish in time; handed back", len(unfinished))
            await self._release(unfinished)

    async def _release(self, entry_ids: list[str]) -> None:
        if not entry_ids:
            return
        for entry_id in entry_ids:
            delivery = self.held.pop(entry_id, None)
            if delivery is not None:
                with contextlib.suppress(Exception):
                    self.records.released(self.broker.formatter.loads(delivery.data))
        with contextlib.suppress(Exception):
            await self.broker.release(entry_ids)

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 5)
            try:
                await self.broker.extend(list(self.held))
            except Exception as exc:
                logger.error("cannot renew task leases in Redis: %s", exc)

    async def _delayed_loop(self) -> None:
        """Move due delayed tasks (delays, retry backoffs) onto the stream, to the millisecond."""
        while True:
            try:
                next_due = await self.broker.move_due()
            except Exception as exc:
                logger.debug("cannot move delayed tasks: %s", exc)
                next_due = None
            wait = 0.25 if next_due is None else max(0.001, min(0.25, next_due - time.time()))
            await asyncio.sleep(wait)

    async def _commit_loop(self) -> None:
        """Commit as soon as there is something to; what comes meanwhile joins the next batch."""
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            try:
                await self._commit()
            except Exception as exc:
                logger.error("cannot save run records (%s); keeping them to retry", exc)
                await asyncio.sleep(1.0)

    async def _commit(self) -> None:
        """Save run records, then dead letters, then ack the messages: a record is never behind them."""
        await self.records.flush()
        await self.dead_letters.flush()
        if self.to_ack:
            batch, self.to_ack = self.to_ack, []
            try:
                await self.broker.ack(batch)
            except BaseException:
                self.to_ack = batch + self.to_ack
                raise
            for entry_id in batch:
                self.held.pop(entry_id, None)
        self.room.set()

    # --- one task ----------------------------------------------------------------------------------

    async def _execute(self, delivery: Delivery) -> None:
        try:
            message = decode(delivery.data)
        except Exception:
            logger.exception("dropping entry %s: not a task message", delivery.entry_id)
            self.to_ack.append(delivery.entry_id)
            return
        labels = message.labels
        labels.setdefault("attempt", 1)
        labels["history"] = list(labels.get("history") or [])
        labels["started_at"] = time.time()
        for hook in self.pre_execute:
            message = await _call(hook, message)
        self.dirty.set()  # the run shows `running` while it runs
        started = time.perf_counter()
        value: Any = None
        error: BaseException | None = None
        try:
            value = await self._run(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        duration = time.perf_counter() - started
        labels["history"].append(
            {
                "attempt": labels["attempt"],
                "started_at": labels["started_at"],
                "duration_ms": round(duration * 1000, 2),
                "error": None if error is None else _describe(error),
            }
        )
        result: TaskiqResult[Any] = TaskiqResult.model_construct(
            is_err=error is not None, log=None, return_value=value, execution_time=duration, error=error, labels=labels
        )
        if error is not None:
            for hook in self.on_error:
                await _call(hook, message, result, error)
        for hook in self.post_execute:
            await _call(hook, message, result)
        self.done_count += 1
        self.to_ack.append(delivery.entry_id)
        self.dirty.set()

    async def _run(self, message: TaskiqMessage) -> Any:
        fn = self.runtime.app.tasks.get(message.task_name)
        if fn is None:
            raise UnknownFunction(
                f"function '{message.task_name}' is not in the manifest of '{self.runtime.app.name}'; "
                "restore it, then replay this run"
            )
        kwargs = fn.validate(message.kwargs)
        timeout = self.runtime.app.manifest.timeout(message.task_name)
        try:
            if fn.is_async:
                async with asyncio.timeout(timeout):
                    return await fn.fn(**kwargs)  # type: ignore[misc]
            return await self.sync_pool.run(fn.ref, kwargs, timeout)
        except TimeoutError:
            raise TaskTimeout(f"timed out after {format_duration(timeout)}") from None

    # --- health ------------------------------------------------------------------------------------

    async def _live(self) -> tuple[int, dict[str, Any]]:
        ok = self.heartbeat.fresh()
        return (200 if ok else 503), {"status": "ok" if ok else "stuck", "consumer": self.broker.consumer}

    async def _ready(self) -> tuple[int, dict[str, Any]]:
        deps = await dependencies(self.runtime)
        ok = self.heartbeat.fresh() and all(v == "ok" for v in deps.values()) and not self.stopping.is_set()
        body = {
            "status": "ok" if ok else "unavailable",
            "consumer": self.broker.consumer,
            "running": len(self.running),
            "held": len(self.held),
            "done": self.done_count,
            **deps,
        }
        return (200 if ok else 503), body


def decode(data: bytes) -> TaskiqMessage:
    """A task message from its JSON (taskiq's format), without revalidating it field by field."""
    raw = orjson.loads(data)
    return TaskiqMessage.model_construct(
        task_id=raw["task_id"],
        task_name=raw["task_name"],
        labels=raw.get("labels") or {},
        labels_types=raw.get("labels_types"),
        args=raw.get("args") or [],
        kwargs=raw.get("kwargs") or {},
    )


def _describe(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, TaskTimeout | UnknownFunction) or type(error).__name__ == "TaskError":
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__

"""The worker: reads tasks from the stream, runs up to `concurrency` at once, and acks them when done.

    fetch ──> queue ──> N runners: mark started → pre_execute → run (timeout) → on_error → post_execute
                                                      ──> commit (fence, records flushed, then acked,
                                                                  a retry sent in the same step as its ack)

Every entry this worker holds is under a lease that a thread renews (runtime/queue/leases.py), so a blocked event
loop does not lose it; an entry another worker took anyway (this worker was paused) is stopped here and
neither recorded nor acked. Entries whose lease lapsed (a dead worker's) are reclaimed on a timer; one that
was running when its worker died counts as a failed attempt, so a task that kills its worker ends `failed`
after its retries instead of looping. An entry that is not a task message is dead-lettered with the reason.
On SIGTERM it stops fetching, gives back what it has not started, lets running tasks finish within the
shutdown timeout, and gives back the rest, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

import anyio
import orjson
from redis.exceptions import RedisError

from runtime import gc_pause
from runtime.app.connections import Runtime
from runtime.app.durations import format_duration
from runtime.errors import WorkerDied
from runtime.flow.gate import gate_for
from runtime.ops import presence
from runtime.ops.health import HealthServer, Heartbeat
from runtime.queue.broker import CANCELLED, PAUSED, Delivery
from runtime.queue.leases import LeaseKeeper
from runtime.queue.messages import InvalidMessage, decode
from runtime.queue.priority import QueueOrder, served_queues
from runtime.worker import readiness
from runtime.worker.attempts import Attempts, call, identity, start_mark
from runtime.worker.cancellation import Cancellations
from runtime.worker.commits import Commits
from runtime.worker.sync_pool import SyncPool

logger = logging.getLogger("runtime.worker")

PREFETCH_FACTOR = 2  # a worker reads ahead up to concurrency x this many tasks (KEDA's target uses it)
MAX_UNACKED = 2000  # finished tasks whose records and acks are not written yet (the database is slow)
HAND_BACK_AFTER = 2.0  # seconds read-ahead may wait behind busy runners before an idle worker gets it
STALL_LIMIT = 60.0  # seconds the event loop may block before this worker stops renewing its leases
WORKER_DIED = "worker died while running this task"


class Worker:
    def __init__(self, runtime: Runtime, concurrency: int | None = None, queues: list[str] | None = None) -> None:
        self.runtime = runtime
        self.broker = runtime.broker
        manifest = runtime.app.manifest
        self.concurrency = concurrency or manifest.defaults.concurrency
        self.prefetch = self.concurrency * PREFETCH_FACTOR  # running + read ahead
        self.lease = runtime.settings.lease_seconds
        self.queues = served_queues(manifest, queues)
        self.order = QueueOrder(
            self.queues, manifest.queue_weights(), manifest.priority == "strict", self.broker.paused
        )
        self.next_reclaim = 0.0  # when the fetch loop next looks for lapsed leases
        max_attempts = {name: manifest.retries(name) + 1 for name in manifest.tasks()}
        self.cancels = Cancellations(runtime)
        self.sync_pool = SyncPool(self.concurrency)
        self.attempts = Attempts(runtime, max_attempts, self.sync_pool, self.cancels, self._finished)
        self.identity = identity(self.broker.consumer)  # in each start mark, so each attempt names its worker
        self.warm_after = 0.0  # seconds from start to filling the sync pool (the emulator lets a reload settle first)
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.held: dict[str, Delivery] = {}  # entry id -> delivery, until acked, released or lost
        self.fetched_at: dict[str, float] = {}  # entry id -> when it was read (while it waits to start)
        self.running: dict[str, asyncio.Task[None]] = {}  # entry id -> the runner running it
        self.stopped: set[str] = set()  # entry ids whose execution was stopped here (their lease was lost)
        self.run_of: dict[str, str] = {}  # entry id -> run id, once decoded
        self.room = asyncio.Event()
        self.stopping = asyncio.Event()
        self.heartbeat = Heartbeat()
        self.redis_ok = True
        self.gate = gate_for(runtime, self.broker.consumer)  # concurrency and throttle (runtime/flow/gate.py)
        self.due_changed = self.gate.delayed if self.gate is not None else asyncio.Event()
        self.commits = Commits(
            self.broker,
            [self.attempts.records.flush, self.attempts.dead_letters.flush],
            held=lambda: list(self.held),
            lost=self._lost,
            done=self._acked,
        )
        self.leases = LeaseKeeper(
            self.broker.redis_url,
            self.broker.keys,
            self.broker.consumer,
            self.queues,
            self.lease,
            held=lambda: list(self.held),
            on_lost=self._lost,
            loop_age=lambda: time.monotonic() - self.heartbeat.last,
            stall_limit=max(STALL_LIMIT, 6 * self.lease),
        )

    # --- the loops ---------------------------------------------------------------------------------

    async def run(self, health_port: int | None = None, host: str = "0.0.0.0") -> None:
        """Run until `stop()`; then drain within the shutdown timeout."""
        health = None
        if health_port:
            health = HealthServer(functools.partial(readiness.ready, self), functools.partial(readiness.live, self))
            port = await health.start(host, health_port)
            logger.info("worker health on http://%s:%d/health", host, port)
        for middleware in self.attempts.middlewares:
            await call(middleware.startup)
        consumer, tasks = self.broker.consumer, len(self.runtime.app.tasks)
        logger.info("worker %s ready: %d tasks, concurrency %d", consumer, tasks, self.concurrency)
        gc_pause.resume()
        if any(not fn.is_async for fn in self.runtime.app.tasks.values()):
            # the first sync task should not wait for a process to start, nor to import its handler
            refs = [fn.ref for fn in self.runtime.app.tasks.values() if not fn.is_async]
            self.sync_pool.warm(refs, after=self.warm_after)
        self.leases.start()
        async with anyio.create_task_group() as background:
            background.start_soon(self._beat_loop)
            background.start_soon(self._delayed_loop)
            background.start_soon(self.commits.loop)
            background.start_soon(self.cancels.listen, self._cancel)
            if self.gate is not None:
                background.start_soon(self.gate.loop)
            runners = [asyncio.create_task(self._runner()) for _ in range(self.concurrency)]
            await self._fetch_loop()
            deadline = await self._drain(runners)
            background.cancel_scope.cancel()
        await self.commits.last(deadline)
        if self.gate is not None:
            await self.gate.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(presence.withdraw(self.runtime, self.broker.consumer), 2.0)
        self.leases.stop()
        for middleware in self.attempts.middlewares:
            await call(middleware.shutdown)
        self.sync_pool.close()
        if health:
            await health.stop()
        logger.info("worker %s stopped after %d tasks", self.broker.consumer, self.attempts.done_count)

    def stop(self) -> None:
        self.stopping.set()
        self.room.set()
        self.cancels.stopping()

    async def _fetch_loop(self) -> None:
        while not self.stopping.is_set():
            self.heartbeat.beat()
            await self._hand_back_waiting()
            finished = self.commits.finished_count()  # held only until their ack
            room = min(self.prefetch - (len(self.held) - finished), MAX_UNACKED - finished)
            if room <= 0 or (room < self.prefetch // 2 and not self.queue.empty()):  # read a few at a time
                self.room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # not wait_for: no task a wait
                        await self.room.wait()
                continue
            try:
                sent = time.monotonic()
                deliveries = await self._fetch(room if self.gate is None else self.gate.read_ahead(room))
                self.redis_ok = True
            except Exception as exc:  # Redis away: keep trying, and say so once
                if "NOGROUP" in str(exc):  # Redis came back without its data: the groups go first
                    logger.warning("Redis lost the consumer groups (restarted without its data?); creating them")
                    try:
                        await self.broker.ensure_groups()
                    except Exception:
                        await asyncio.sleep(1.0)
                    continue
                if self.redis_ok:
                    logger.error("cannot read tasks from Redis: %s; retrying", exc)
                self.redis_ok = False
                await asyncio.sleep(1.0)
                continue
            if self.gate is not None and deliveries:  # parked ones are acked: never held here
                free = self.concurrency - len(self.running) - self.queue.qsize()
                screened = await self.gate.screen(deliveries, free, decode)
                self._acked([d.key for d in deliveries if d not in screened])
                deliveries = screened
            now = time.monotonic()
            for delivery in deliveries:
                if delivery.key not in self.held:
                    self.held[delivery.key] = delivery
                    self.fetched_at[delivery.key], self.commits.touched[delivery.key] = now, sent
                    self.queue.put_nowait(delivery)

    async def _fetch(self, room: int) -> list[Delivery]:
        """Up to `room` entries: lapsed leases first (for idle runners only), then new entries from the
        queues in priority order: weighted (a random order, each queue's chance by its weight) or strict."""
        queues = await self.order.now()
        if not queues:
            await asyncio.sleep(min(1.0, self.lease / 4))  # every queue this worker serves is paused
            return []
        # reclaim only for idle runners: read-ahead handed back by a busy worker is for idle ones
        free = self.concurrency - len(self.running) - self.queue.qsize()
        if time.monotonic() >= self.next_reclaim and free > 0:
            self.next_reclaim = time.monotonic() + self.lease / 4
            for queue in queues:
                deliveries = await self.broker.reclaim(queue, min(room, free))
                for delivery in deliveries:
                    logger.warning("reclaimed entry %s from a worker that stopped answering", delivery.key)
                if deliveries:
                    return deliveries
        for queue in queues:  # the first queue in priority order with new entries gives them all
            deliveries = await self.broker.read([queue], room, block_ms=None)
            if deliveries:
                return deliveries
        if self.queue.qsize():
            return []
        # nothing anywhere: wait for new tasks on every queue (BLOCK 0 would wait forever)
        return await self.broker.read(queues, max(1, room // len(queues)), int(min(1.0, self.lease / 4) * 1000))

    async def _hand_back_waiting(self) -> None:
        """Read-ahead that waited too long behind busy runners goes back, so an idle worker can run it."""
        if self.queue.empty() or len(self.running) < self.concurrency:
            return
        cutoff = time.monotonic() - HAND_BACK_AFTER
        waiting = [self.queue.get_nowait() for _ in range(self.queue.qsize())]
        stale = [d.key for d in waiting if self.fetched_at.get(d.key, 0.0) < cutoff]
        for delivery in waiting:
            if delivery.key not in stale:
                self.queue.put_nowait(delivery)
        if stale:
            logger.debug("handing back %d task(s) that waited behind busy runners", len(stale))
            await self._release(stale, started=False)

    async def _runner(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        while True:
            delivery = await self.queue.get()
            key = delivery.key
            self.fetched_at.pop(key, None)
            if key not in self.held:
                continue  # lost or handed back while it waited
            self.running[key] = current  # the runner runs it itself: stopping it cancels the runner
            try:
                await self._execute(delivery)
            except asyncio.CancelledError:
                if (key not in self.stopped and key not in self.cancels.requested) or current.uncancel() > 0:
                    raise  # the worker is stopping; else its lease was lost (nothing recorded or acked) or it was
                    # cancelled after its function returned
            except (RedisError, OSError) as exc:
                # the run could not be completed here (Redis went away mid-way): give it back
                logger.warning("could not complete entry %s (%s); handing it back", key, exc)
                await self._release([key])
            except Exception:
                logger.exception("could not complete entry %s; handing it back", key)
                await self._release([key])
            finally:
                self.running.pop(key, None)
                self.stopped.discard(key)
                self.cancels.requested.discard(key)

    def _lost(self, keys: list[str]) -> None:
        """Another worker holds these entries now: stop them here, and record and ack nothing of them."""
        for key in keys:
            if self.gate is not None:
                self.gate.release(key)
            if self.held.pop(key, None) is None:
                continue
            run_id = self.run_of.pop(key, None)
            logger.warning(
                "lost the lease on entry %s (run %s): another worker holds it now; stopping it here",
                key,
                run_id,
                extra={"run_id": run_id},
            )
            if run_id is not None:
                self.attempts.records.discard(run_id)
            self.commits.forget(key)
            runner = self.running.get(key)
            if runner is not None and key not in self.stopped:
                self.stopped.add(key)
                runner.cancel()
        self.room.set()

    async def _drain(self, runners: list[asyncio.Task[None]]) -> float:
        """Stop: give back queued entries, wait for running ones, give back those still running."""
        queued = []
        while not self.queue.empty():
            queued.append(self.queue.get_nowait())
        await self._release([d.key for d in queued], started=False)
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
        return deadline

    async def _release(self, keys: list[str], started: bool = True) -> None:
        """Hand entries back to the queue (not a failed attempt); started runs show `queued` again."""
        if not keys:
            return
        for key in keys:
            if self.gate is not None:
                self.gate.release(key)
            delivery = self.held.pop(key, None)
            self.fetched_at.pop(key, None)
            self.run_of.pop(key, None)
            self.commits.forget(key)
            if delivery is not None and delivery.data is not None and started:
                with contextlib.suppress(Exception):
                    self.attempts.records.released(decode(delivery.data))
        with contextlib.suppress(Exception):
            await self.broker.release(keys)
        self.room.set()

    async def _beat_loop(self) -> None:
        """The loop's sign of life, for the lease keeper and /health/live, even while fetching waits."""
        started, beats = time.time(), 0
        while True:
            self.heartbeat.beat()
            if beats % 3 == 0:  # who is alive, for the dashboard (runtime/ops/presence.py); never blocks the beat
                runs = [self.run_of[key] for key in self.running if key in self.run_of]
                me = presence.info(self.broker.consumer, self.queues, started, self.concurrency, runs, self.attempts)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(presence.publish(self.runtime, me), 1.0)
            beats += 1
            await asyncio.sleep(1.0)

    async def _delayed_loop(self) -> None:
        """Move due delayed tasks (delays, retry backoffs) onto the stream, to the millisecond."""
        while True:
            try:
                next_due = await self.broker.move_due()
            except Exception as exc:
                logger.debug("cannot move delayed tasks: %s", exc)
                next_due = None
            wait = 0.25 if next_due is None else max(0.001, min(0.25, next_due - time.time()))
            with contextlib.suppress(TimeoutError):  # a run this worker delayed (a throttle's turn): look again
                await asyncio.wait_for(self.due_changed.wait(), wait)
            self.due_changed.clear()

    def _acked(self, keys: list[str]) -> None:
        if self.gate is not None:
            self.gate.acked(keys)
        for key in keys:
            self.held.pop(key, None)
            self.run_of.pop(key, None)
        self.room.set()

    # --- one task ----------------------------------------------------------------------------------

    async def _execute(self, delivery: Delivery) -> None:
        if delivery.deleted:  # deleted from the stream while pending: nothing to run
            self._finished(delivery.key)
            return
        try:
            message = decode(delivery.data)
        except InvalidMessage as exc:
            self.attempts.reject(delivery, exc)
            return
        self.run_of[delivery.key] = message.task_id
        labels = message.labels
        labels["queue"] = delivery.queue  # retries go back to the queue it came from
        labels["history"] = []  # this delivery's attempt, appended to the record's (a message once carried them all)
        if delivery.started is not None:
            # its last holder died while running it: that attempt failed, like any other failure
            crashed = start_mark(delivery.started)
            labels["attempt"] = crashed.get("attempt", labels["attempt"])
            labels["started_at"] = crashed.get("started_at", time.time())
            labels["ran_on"] = crashed
            await self.attempts.finish(delivery, message, None, WorkerDied(WORKER_DIED), None)
            return
        labels["started_at"] = time.time()
        mark = labels["ran_on"] = {"attempt": labels["attempt"], "started_at": labels["started_at"], **self.identity}
        marked = functools.partial(self.broker.mark_started, delivery, message.task_id, orjson.dumps(mark))
        if self.gate is not None and message.task_name in self.gate.limits:
            verdict = await self.gate.start(delivery, message, marked)
            if verdict is None:  # it waits for a slot or for its turn (acked by the gate), or is another's now
                self._acked([delivery.key])
                return
        else:
            verdict = await marked(())
        if verdict == CANCELLED:
            await self.attempts.cancelled(delivery, message, None)  # cancelled before it started: it never does
            return
        if verdict == PAUSED:  # paused since it was read: it waits in its queue for `resume`
            self.order.refresh()
            await self._release([delivery.key], started=False)
            return
        for hook, awaited in self.attempts.pre_execute:
            message = (await hook(message)) if awaited else hook(message)
        self.commits.changed()  # the run shows `running` while it runs
        started = time.perf_counter()
        value: Any = None
        error: BaseException | None = None
        context = self.attempts.context(message, labels.get("deadline"))  # None: the function takes none
        if context is not None:
            self.cancels.track(delivery.key, context, stopping=self.stopping.is_set())
        try:
            value = await self.attempts.run(message, context)
        except asyncio.CancelledError:
            if delivery.key not in self.cancels.requested:
                raise  # the worker is stopping, or another worker took the entry
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await self.attempts.cancelled(delivery, message, time.perf_counter() - started)
            return
        except Exception as exc:
            error = exc
        finally:
            self.cancels.contexts.pop(delivery.key, None)
        await self.attempts.finish(delivery, message, value, error, time.perf_counter() - started)

    def _cancel(self, run_id: str) -> None:
        """A cancel was published: if this worker runs that run, stop it (its coroutine sees CancelledError;
        a sync task's process is killed)."""
        for key, owner in list(self.run_of.items()):
            runner = self.running.get(key)
            if owner == run_id and runner is not None and key not in self.cancels.requested:
                self.cancels.request(key, runner)

    def _finished(self, key: str, retry: tuple[bytes, float] | None = None) -> None:
        if self.gate is not None:
            self.gate.finished(key)
        self.commits.finished(key, retry)
        self.room.set()  # a runner is free: fetch now, not after the records are written and acked

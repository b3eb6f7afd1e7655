"""Commits: a worker's finished tasks, saved and then acknowledged, in batches.

Run records are saved first, then dead letters, then the entries are acked, each failed one with its next
attempt in the same script (runtime/queue/broker.py's ack). Only entries whose records this very batch saved are
acked (a task finishing during the flush waits for the next batch), and only those still this worker's:
a renewal goes first (the fence), so entries another worker took are dropped before their records are
written. Only entries Redis last handed or renewed more than a quarter lease ago are fenced: one touched since
cannot have been taken (another worker takes an entry idle a whole lease), so a busy worker's commit makes no
renewal at all, only its ack. A busy worker commits at most every COMMIT_EVERY, so batches grow with the load.
A commit that fails (the database or Redis away) is retried with backoff until it succeeds, its writes kept in
order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from runtime.queue.broker import StreamBroker

logger = logging.getLogger("runtime.worker")

COMMIT_EVERY = 0.01  # seconds between two commits of a busy worker (an idle one commits at once)
RETRY_FIRST, RETRY_MAX = 0.2, 5.0  # seconds between tries of a failing commit: doubling, capped
LAST_COMMIT = 5.0  # seconds a stopping worker tries its last commit at least (K8s' grace leaves it 10)
ACK_STALL = 30.0  # seconds finished tasks may wait for their ack before /health says so


class Commits:
    def __init__(
        self,
        broker: StreamBroker,
        flushes: list[Callable[[], Awaitable[object]]],
        held: Callable[[], list[str]],
        lost: Callable[[list[str]], None],
        done: Callable[[list[str]], None],
    ) -> None:
        self.broker = broker
        self.flushes = flushes  # what saves the records, then the dead letters
        self.held = held  # the entries this worker holds (delivery keys)
        self.touched: dict[str, float] = {}  # held entry -> when (monotonic, before the call) Redis last reset its idle
        self.fresh_for = broker.lease_ms / 4000  # seconds an entry touched needs no fence
        self.lost = lost  # told of entries another worker holds now
        self.done = done  # told of entries acked
        self.to_ack: list[str] = []
        self.acking = 0  # finished entries in the commit under way
        self.retry_of: dict[str, tuple[bytes, float]] = {}  # entry -> its next attempt, sent with its ack
        self.dirty = asyncio.Event()  # run records or acks to commit
        self.committed = time.monotonic()  # last time run records and acks were written
        self.failing_since: float | None = None  # since when commits fail (logged once per outage)

    def changed(self) -> None:
        """A run record changed (a run started): commit it soon."""
        self.dirty.set()

    def finished(self, key: str, retry: tuple[bytes, float] | None = None) -> None:
        """This entry's attempt is over: ack it (with its next attempt, if any) once its record is saved."""
        self.to_ack.append(key)
        if retry is not None:
            self.retry_of[key] = retry
        self.dirty.set()

    def forget(self, key: str) -> None:
        """The entry is not ours to ack any more (lost to another worker, or handed back)."""
        self.retry_of.pop(key, None)  # its next holder decides about the next attempt
        if key in self.to_ack:
            self.to_ack.remove(key)

    def finished_count(self) -> int:
        """Entries held only to be acked (their attempts are over)."""
        return len(self.to_ack) + self.acking

    def stalled(self) -> bool:
        return bool(self.to_ack) and time.monotonic() - self.committed > ACK_STALL

    async def loop(self) -> None:
        """Commit as soon as there is something to; what comes meanwhile joins the next batch."""
        while True:
            await self.dirty.wait()
            await asyncio.sleep(max(0.0, self.committed + COMMIT_EVERY - time.monotonic()))
            self.dirty.clear()
            await self.until_committed()

    async def until_committed(self, deadline: float | None = None) -> bool:
        """Commit; if that fails (the database or Redis away), keep the writes and try again, from RETRY_FIRST
        doubling to RETRY_MAX, until it succeeds (True) or the `deadline` (monotonic) passes (False). On its
        own, not when the next task finishes: once the queue is idle, none would."""
        delay = RETRY_FIRST
        while True:
            try:
                if deadline is None:
                    await self.commit()
                else:
                    await asyncio.wait_for(self.commit(), max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    reason = str(exc).partition("\n")[0]  # not the statement and its parameters that follow
                    logger.warning(
                        "cannot save run records and ack finished tasks (%s: %s); keeping them, retrying",
                        type(exc).__name__,
                        reason,
                    )
                left = RETRY_MAX if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return False
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self.failing_since is not None:
                outage, self.failing_since = time.monotonic() - self.failing_since, None
                logger.info("run records saved and tasks acked again, after %.1f s", outage)
            return True

    async def last(self, deadline: float) -> None:
        """A stopping worker's last commit, tried until the shutdown `deadline` (LAST_COMMIT at least); what it
        cannot commit is left to the leases: those tasks run again on another worker."""
        if not await self.until_committed(max(deadline, time.monotonic() + LAST_COMMIT)):
            logger.warning(
                "stopping with %d finished task(s) neither saved nor acked: they will run again", len(self.to_ack)
            )

    async def commit(self) -> None:
        batch, self.to_ack = self.to_ack, []
        self.acking = len(batch)
        try:
            sent = time.monotonic()
            touched = self.touched
            stale = [key for key in self.held() if touched.get(key, 0.0) < sent - self.fresh_for]
            if stale:
                self.lost(await self.broker.renew(stale))  # the fence
                touched.update(dict.fromkeys(stale, sent))
            still = set(self.held())
            batch = [key for key in batch if key in still]
            for flush in self.flushes:
                await flush()
            lost = await self.broker.ack(batch, {key: self.retry_of[key] for key in batch if key in self.retry_of})
        except BaseException:
            self.to_ack = batch + self.to_ack
            raise
        finally:
            self.acking = 0
        self.lost(lost)
        for key in batch:
            self.retry_of.pop(key, None)
        self.committed = time.monotonic()
        self.done(batch)
        held = set(self.held())
        self.touched = {key: at for key, at in self.touched.items() if key in held}

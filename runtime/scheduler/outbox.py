"""Sending the outbox: the scheduler's leader queues the runs that were accepted while Redis could not be
reached (their records are saved and marked unsent: runtime/store/outbox.py), page by page, one pipeline
of messages each, so a backlog is in the streams within seconds of Redis answering. It looks every
OUTBOX_SECONDS while Redis was unreachable lately (to the scheduler, or to the look itself) or runs were
found, else every RECONCILE_SECONDS: a look reads the index of queued runs, as a reconciler pass does.

A page Redis could not be reached for goes back to the outbox (nothing of it was sent). A page whose
answer was lost stays claimed: those runs are `queued` with a fresh version, so the reconciler looks for
their messages after its grace and queues again only the ones that are missing; a run is never sent twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from runtime.queue.stream_sends import NotSent
from runtime.store.outbox import put_back, take

if TYPE_CHECKING:
    from runtime.app.connections import Runtime
    from runtime.store.models import Run

logger = logging.getLogger("runtime.outbox")

OUTBOX_SECONDS = 1.0  # how often the leader looks for unsent runs while there may be some
BUSY_SECONDS = 60.0  # how long after Redis was unreachable (or runs were found) it looks that often


class Outbox:
    def __init__(self, runtime: Runtime, *, page: int = 500) -> None:
        self.runtime = runtime
        self.page = page
        self.next_look = 0.0
        self.busy_until = 0.0

    def redis_unreachable(self) -> None:
        """Redis failed someone: runs may be waiting, or arriving; look every OUTBOX_SECONDS for a while."""
        self.busy_until = time.monotonic() + BUSY_SECONDS
        self.next_look = min(self.next_look, time.monotonic() + OUTBOX_SECONDS)

    async def look(self) -> int:
        """Send the outbox if it is time to look; returns how many runs were sent."""
        now = time.monotonic()
        if now < self.next_look:
            return 0
        self.next_look = now + OUTBOX_SECONDS  # a look that fails is tried again soon
        sent = await self.send()
        if sent:
            self.busy_until = time.monotonic() + BUSY_SECONDS
        if time.monotonic() > self.busy_until:
            self.next_look = now + self.runtime.settings.reconcile_seconds
        return sent

    async def send(self) -> int:
        """Queue every unsent run, a page at a time; returns how many were sent."""
        sent = 0
        while True:
            runs, version = await take(self.runtime.store, self.page)
            if not runs:
                break
            done: set[str] = set()
            for batch in self._batches(runs):
                try:
                    await self.runtime.broker.kick_many(batch.messages, queue=batch.queue, due=batch.due)
                except NotSent:  # this batch and the rest of the page were not sent: back to the outbox
                    self.redis_unreachable()
                    unsent = [run.id for run in runs if run.id not in done]
                    await put_back(self.runtime.store, unsent, version)
                    raise
                done.update(batch.ids)
                sent += len(batch.ids)
            if len(runs) < self.page:
                break
        if sent:
            logger.info("queued %d run(s) accepted while Redis was unreachable", sent)
        return sent

    def _batches(self, runs: list[Run]) -> list[Batch]:
        """The page's messages, one batch per queue (and per due time, for delayed runs)."""
        manifest = self.runtime.app.manifest
        batches: dict[tuple[str, float | None], Batch] = {}
        for run in runs:
            fn = self.runtime.app.tasks.get(run.function)
            if run.queue in manifest.queue_names():
                queue = run.queue
            else:  # a run whose function left the manifest is dead-lettered by the worker, on a read queue
                queue = self.runtime.queue_of(fn) if fn is not None else manifest.defaults.queue
            due = _timestamp(run.scheduled_for) if run.status == "scheduled" and run.scheduled_for else None
            deadline = _timestamp(run.deadline) if run.deadline is not None else None
            message = self.runtime.message(
                run.function,
                run.id,
                run.arguments,
                1,
                _timestamp(run.enqueued_at),
                deadline=deadline,
                parent=run.parent,
            )
            batch = batches.setdefault((queue, due), Batch(queue, due))
            batch.ids.append(run.id)
            batch.messages.append(message)
        return list(batches.values())


@dataclass
class Batch:
    queue: str
    due: float | None
    ids: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)


def _timestamp(value: datetime) -> float:
    return value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()

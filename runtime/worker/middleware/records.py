"""Run records: every state change of a run, buffered and written to the run store in batches.

Writing a row per state change would cap a worker at the database's round-trip rate; instead updates
are coalesced per run (the newest wins) and written together by `flush()`, which the worker calls
before it acknowledges the messages, so a run's record is saved before its message leaves Redis.
Each update is the run's full state with a version (time and phase), written as an upsert that never
replaces a newer state: the enqueue's insert and the worker's updates may land in either order. Its history
is only the attempt this delivery adds (the `history` label: none while running, one when it ends or waits),
which the store appends to the run's list (runtime/store/attempt_history.py): messages carry no history.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from runtime.store.runs import RunStore
from runtime.store.values import from_timestamp, to_jsonable
from runtime.tracing import trace_id_of

logger = logging.getLogger("runtime.worker")


def unavailable() -> tuple[type[BaseException], ...]:
    """The errors that say the database is away (keep the batch and retry), not that a row is bad. A function: the
    store's writes raise SQLAlchemy's types, imported once one is being caught (a worker starts without SQLAlchemy)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    return (OperationalError, InterfaceError, OSError, ConnectionError, TimeoutError)


JSON_COLUMNS = ("arguments", "result", "history")

# the last digit of a version orders the phases of one attempt
QUEUED, RUNNING, FINISHED = 0, 1, 2


def version(phase: int) -> int:
    return int(time.time() * 1000) * 10 + phase


def first_start(labels: dict[str, Any]) -> float | None:
    """When this attempt started (the store keeps the run's first start)."""
    history = labels.get("history") or []
    first = history[0].get("started_at") if history else None
    return first if isinstance(first, int | float) else labels.get("started_at")


class RunRecordMiddleware(TaskiqMiddleware):
    def __init__(self, store: RunStore, max_attempts: dict[str, int]) -> None:
        super().__init__()
        self.store = store
        self.max_attempts = max_attempts
        self.pending: dict[str, tuple[TaskiqMessage, str, int, float | None, Any]] = {}

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        self.pending[message.task_id] = (message, "running", version(RUNNING), None, None)
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        outcome = message.labels.get("outcome", "failed")
        finished = time.time() if outcome != "retrying" else None
        value = to_jsonable(result.return_value) if outcome == "succeeded" else None
        self.pending[message.task_id] = (message, outcome, version(FINISHED), finished, value)

    def discard(self, run_id: str) -> None:
        """Forget a buffered update (the run's entry went to another worker, whose record wins)."""
        self.pending.pop(run_id, None)

    def invalid(self, run_id: str, function: str, raw: str, error: str) -> None:
        """A message no worker can run: its run is `failed` with the reason, the raw message kept."""
        labels = {"attempt": 0, "history": [], "enqueued_at": time.time()}
        message = TaskiqMessage(task_id=run_id, task_name=function, labels=labels, args=[], kwargs={"_raw": raw})
        message.labels["history"] = [
            {
                "attempt": 0,
                "started_at": time.time(),
                "duration_ms": None,
                "error": error,
                "error_type": "InvalidMessage",
            }
        ]
        self.pending[run_id] = (message, "failed", version(FINISHED), time.time(), None)

    def cancelled(self, message: TaskiqMessage) -> None:
        """The run was cancelled: it stopped here (or never started) and is never retried."""
        self.pending[message.task_id] = (message, "cancelled", version(FINISHED), time.time(), None)

    def waiting(self, message: TaskiqMessage) -> None:
        """The run waits (a durable sleep): no worker holds it until it wakes."""
        self.pending[message.task_id] = (message, "waiting", version(FINISHED), None, None)

    def released(self, message: TaskiqMessage) -> None:
        """A stopping worker gave the run back to the queue before it finished (no attempt to add)."""
        message.labels["history"] = []
        self.pending[message.task_id] = (message, "queued", version(QUEUED), None, None)

    def _row(
        self, message: TaskiqMessage, status: str, row_version: int, finished: float | None, value: Any
    ) -> dict[str, Any]:
        labels = message.labels
        history = labels.get("history") or []
        return {
            "id": message.task_id,
            "function": message.task_name,
            "queue": labels.get("queue") or "default",
            "arguments": message.kwargs,
            "max_attempts": self.max_attempts.get(message.task_name, 1),
            "enqueued_at": from_timestamp(labels.get("enqueued_at") or time.time()),
            "status": status,
            "attempts": int(labels.get("attempt", 1)),
            "last_error": history[-1]["error"] if history else None,
            "error_type": history[-1].get("error_type") if history else None,
            "started_at": from_timestamp(first_start(labels)),
            "finished_at": from_timestamp(finished),
            "result": value,
            "history": history,
            "version": row_version,
            "trace_id": trace_id_of(labels),
            "waiting_for": labels.get("waiting_for") if status == "waiting" else None,
        }

    async def flush(self) -> int:
        """Write every buffered update; on failure they stay buffered for the next flush."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, {}
        try:
            rows = [self._row(*state) for state in batch.values()]
            try:
                await self.store.update_many(rows)
            except unavailable():
                raise
            except Exception:
                await self._one_by_one(rows)  # one bad row must not block the others, nor the acks
        except BaseException:
            self.pending = batch | self.pending
            raise
        return len(batch)

    async def _one_by_one(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            try:
                await self.store.update_many([row])
            except unavailable():
                raise
            except Exception as exc:
                logger.error("run %s: its record cannot be saved as it is (%s); saving what can be", row["id"], exc)
                await self.store.update_many([_storable(row, exc)])


def _storable(row: dict[str, Any], error: Exception) -> dict[str, Any]:
    """A row whose JSON columns the database refused, with those columns as plain text instead."""
    safe = dict(row)
    for column in JSON_COLUMNS:
        text = json.dumps(row.get(column), default=repr, ensure_ascii=True)[:65536].replace("\\u0000", "")
        safe[column] = {"_unstorable": text} if column == "arguments" else ([] if column == "history" else text)
    note = f"the record could not be stored as it was ({type(error).__name__}); its data is kept as text"
    safe["last_error"] = f"{row.get('last_error')}; {note}" if row.get("last_error") else note
    return safe

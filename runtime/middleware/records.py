"""Run records: every state change of a run, buffered and written to the run store in batches.

Writing a row per state change would cap a worker at the database's round-trip rate; instead updates
are coalesced per run (the newest wins) and written together by `flush()`, which the worker calls
before it acknowledges the messages, so a run's record is saved before its message leaves Redis.
"""

from __future__ import annotations

import time
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from runtime.runs import RunStore, from_timestamp, to_jsonable

# the last digit of a version orders the phases of one attempt
QUEUED, RUNNING, FINISHED = 0, 1, 2


def version(phase: int) -> int:
    return int(time.time() * 1000) * 10 + phase


class RunRecordMiddleware(TaskiqMiddleware):
    def __init__(self, store: RunStore) -> None:
        super().__init__()
        self.store = store
        self.pending: dict[str, dict[str, Any]] = {}

    def _state(self, message: TaskiqMessage, status: str, phase: int, **fields: Any) -> None:
        labels = message.labels
        history = labels.get("history") or []
        self.pending[message.task_id] = {
            "id": message.task_id,
            "status": status,
            "attempts": int(labels.get("attempt", 1)),
            "last_error": history[-1]["error"] if history else None,
            "started_at": from_timestamp(labels.get("started_at")),
            "finished_at": None,
            "result": None,
            "history": history,
            "version": version(phase),
        } | fields

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        self._state(message, "running", RUNNING)
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        outcome = message.labels.get("outcome", "failed")
        finished = from_timestamp(time.time()) if outcome != "retrying" else None
        value = to_jsonable(result.return_value) if outcome == "succeeded" else None
        self._state(message, outcome, FINISHED, finished_at=finished, result=value)

    def released(self, message: TaskiqMessage) -> None:
        """A stopping worker gave the run back to the queue before it finished."""
        self._state(message, "queued", QUEUED)

    async def flush(self) -> int:
        """Write every buffered update; on failure they stay buffered for the next flush."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, {}
        try:
            await self.store.update_many(list(batch.values()))
        except BaseException:
            self.pending = batch | self.pending
            raise
        return len(batch)

"""Telling a parent run that its child ended: the child's finished event, which the parent's `ctx.invoke` waits
for. Sent with the event's own name as its id, so it is sent once whoever tells first: the worker that ends the
child, or a cancel of a child no worker holds (a worker that meets its message later tells it again, ignored)."""

from __future__ import annotations

import logging
from typing import Any

from runtime.app.events import deliver
from runtime.durable.events import finished_event
from runtime.errors import ArgumentsError
from runtime.queue.messages import describe, error_type
from runtime.store.values import to_jsonable

logger = logging.getLogger("runtime.durable")


# `runtime` below is runtime/app/connections.py's Runtime, which imports this module (so typed Any here)
async def tell_parent(
    runtime: Any, run_id: str, status: str, value: Any = None, error: BaseException | None = None, reason: str = ""
) -> None:
    """The run `run_id` ended `status` (succeeded, failed or cancelled): its parent, waiting in `ctx.invoke`,
    goes on with its result or a StepFailed that says so (`error`'s, or `reason`). Redis away: logged, and the
    parent wakes at its wait's end."""
    event = finished_event(run_id)
    data: dict[str, Any] = {"run_id": run_id, "status": status, "result": None}
    if status == "succeeded":
        data["result"] = to_jsonable(value)
    elif error is not None:
        data |= {"error_type": error_type(error), "error": describe(error)}
    elif reason:
        data["error"] = reason
    try:
        try:
            await deliver(runtime, event, data, event)
        except ArgumentsError as exc:  # a result too big to hand over (checked before anything is sent)
            data = {"run_id": run_id, "status": "failed", "error_type": "ResultTooLarge", "error": str(exc)}
            await deliver(runtime, event, data, event)
    except Exception as exc:
        logger.error("run %s: cannot tell its parent run it %s (%s)", run_id, status, exc, extra={"run_id": run_id})

"""Task messages as they travel through Redis: taskiq's JSON format, read back with its shape checked.

A stream entry is written by our enqueue, but anything can XADD to the stream; an entry that is not a task
message must be dead-lettered with the reason, never jam a worker, so `decode` checks every field it uses.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from taskiq import TaskiqMessage

from runtime.errors import DeadlineExceeded, RetryAfter, TaskTimeout, UnknownFunction, WorkerDied
from runtime.redaction import redact

MAX_ERROR_LENGTH = 4000  # characters of an error kept in run records and logs
MAX_TRACEBACK_LENGTH = 16_000  # characters of a traceback kept in run records and logs
_OURS = (str(Path(__file__).parent), "/asyncio/", "/anyio/", "/taskiq/", "/multiprocessing/")
MAX_RAW = 1 << 20  # bytes of an invalid entry kept in its dead letter
MAX_ATTEMPT = 10_000
MAX_TIMESTAMP = 1e11  # seconds: year 5138


class InvalidMessage(ValueError):
    """A stream entry that is not a task message; what could be read of it is kept for the record."""

    def __init__(self, reason: str, raw: str, run_id: str | None = None, function: str = "(invalid)") -> None:
        super().__init__(reason)
        self.raw = raw
        self.run_id = run_id
        self.function = function


_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FUNCTION = re.compile(r"^[a-z0-9_]{1,200}$")


def _raw_text(data: bytes) -> str:
    """The start of an invalid message, as its dead letter keeps it (decoded only when it is invalid)."""
    return data[:MAX_RAW].decode("utf-8", errors="replace")


def decode(data: bytes | None) -> TaskiqMessage:
    """A task message from its JSON (taskiq's format), its shape checked; InvalidMessage says what is wrong."""
    if data is None:
        raise InvalidMessage("the stream entry has no 'data' field", "")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not JSON ({exc})", _raw_text(data)) from None
    if not isinstance(raw, dict):
        raise InvalidMessage(f"not a JSON object but {type(raw).__name__}", _raw_text(data))
    task_id, task_name = raw.get("task_id"), raw.get("task_name")
    run_id = task_id if isinstance(task_id, str) and _RUN_ID.match(task_id) else None
    function = task_name if isinstance(task_name, str) and _FUNCTION.match(task_name) else "(invalid)"

    def invalid(reason: str) -> InvalidMessage:
        return InvalidMessage(reason, _raw_text(data), run_id, function)

    if run_id is None:
        raise invalid(f"task_id must be a run id (1-64 letters, digits, '-' or '_'), not {task_id!r:.80}")
    if function == "(invalid)":
        raise invalid(f"task_name must be a function name, not {task_name!r:.80}")
    labels = raw.get("labels")
    labels = {} if labels is None else labels
    if not isinstance(labels, dict):
        raise invalid(f"labels must be an object, not {type(labels).__name__}")
    attempt = labels.get("attempt", 1)
    if type(attempt) is not int or not 1 <= attempt <= MAX_ATTEMPT:
        raise invalid(f"labels.attempt must be a whole number from 1 to {MAX_ATTEMPT}, not {attempt!r:.80}")
    labels["attempt"] = attempt
    enqueued_at = labels.get("enqueued_at")
    if enqueued_at is not None and (
        type(enqueued_at) not in (int, float) or not 0 < enqueued_at < MAX_TIMESTAMP or enqueued_at != enqueued_at
    ):
        raise invalid(f"labels.enqueued_at must be a Unix time in seconds, not {enqueued_at!r:.80}")
    deadline = labels.get("deadline")
    if deadline is not None and (type(deadline) not in (int, float) or not 0 < deadline < MAX_TIMESTAMP):
        raise invalid(f"labels.deadline must be a Unix time in seconds, not {deadline!r:.80}")
    history = labels.get("history")
    if history is not None and not (isinstance(history, list) and all(isinstance(h, dict) for h in history)):
        raise invalid("labels.history must be a list of objects")
    kwargs, args = raw.get("kwargs") or {}, raw.get("args") or []
    if not isinstance(kwargs, dict):
        raise invalid(f"kwargs must be an object, not {type(kwargs).__name__}")
    if not isinstance(args, list):
        raise invalid(f"args must be a list, not {type(args).__name__}")
    return built(
        TaskiqMessage,
        {
            "task_id": run_id,
            "task_name": function,
            "labels": labels,
            "labels_types": raw.get("labels_types"),
            "args": args,
            "kwargs": kwargs,
        },
    )


M = TypeVar("M", bound=BaseModel)


def built(model: type[M], fields: dict[str, Any]) -> M:
    """A pydantic model of these values, unchecked: what `model_construct` makes, in a third of its time (it looks
    up every field's default and alias; here `fields` names every field, with a model that has no private
    attributes). Two a task: its message and its result."""
    made = model.__new__(model)
    object.__setattr__(made, "__dict__", fields)
    object.__setattr__(made, "__pydantic_fields_set__", set(fields))
    object.__setattr__(made, "__pydantic_extra__", None)
    object.__setattr__(made, "__pydantic_private__", None)
    return made


def describe(error: BaseException) -> str:
    """An attempt's error as stored and shown: type and message, secrets redacted, capped in length."""
    text = redact(str(error))
    if (
        not isinstance(error, TaskTimeout | UnknownFunction | WorkerDied | DeadlineExceeded | RetryAfter)
        and type(error).__name__ != "TaskError"
    ):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if len(text) > MAX_ERROR_LENGTH:
        text = text[:MAX_ERROR_LENGTH] + f"... ({len(text) - MAX_ERROR_LENGTH} more characters)"
    return text


def error_type(error: BaseException) -> str:
    """The error's type name (a sync task's own, carried back from its process)."""
    return str(getattr(error, "type_name", None) or type(error).__name__)


def describe_traceback(error: BaseException) -> str | None:
    """Where the error came from: the user's frames plus the raise site, capped in length.

    The worker's own frames (the runtime, asyncio, taskiq) say nothing about the task and are left out.
    """
    if isinstance(error, TaskTimeout | UnknownFunction | WorkerDied | DeadlineExceeded | RetryAfter):
        return None
    trace = getattr(error, "trace", None)  # a sync task's traceback, formatted in its process
    if not isinstance(trace, str):
        frames = traceback.extract_tb(error.__traceback__)
        kept = [f for f in frames if not any(part in f.filename for part in _OURS)]
        if frames and (not kept or kept[-1] is not frames[-1]):
            kept.append(frames[-1])  # the raise site, wherever it is
        lines = ["Traceback (most recent call last):\n", *traceback.format_list(kept)]
        trace = "".join([*lines, describe(error), "\n"])
    # no line longer than an error message: a huge message must not crowd out the frames
    trace = "\n".join(
        line if len(line) <= MAX_ERROR_LENGTH else line[:MAX_ERROR_LENGTH] + "..." for line in redact(trace).split("\n")
    )
    if len(trace) > MAX_TRACEBACK_LENGTH:
        trace = "... (earlier lines cut)\n" + trace[-MAX_TRACEBACK_LENGTH:]
    return trace.rstrip()

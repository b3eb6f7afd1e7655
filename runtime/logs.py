"""Logging: readable coloured text on a terminal, one JSON object per line in production."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from runtime.redaction import redact, register_secret
from runtime.settings import Settings

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "run_bound"}

# the run a task's attempt is about (run_id, function, attempt, queue, trace_id), bound for its duration
run_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("run_context", default=None)


def bind_run(fields: dict[str, Any]) -> contextvars.Token[dict[str, Any] | None]:
    """Bind a run's fields to every log line emitted in this context (an attempt's own asyncio task)."""
    return run_context.set(fields)


class RunContextFilter(logging.Filter):
    """Adds the bound run's fields to a record that does not carry them itself (a line a task logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = run_context.get()
        if fields:
            if not hasattr(record, "run_id"):
                record.run_bound = True  # the text format marks such lines with the run
            for key, value in fields.items():
                if value is not None and not hasattr(record, key):
                    setattr(record, key, value)
        return True


_COLOURS = {"DEBUG": "\033[2m", "INFO": "\033[36m", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[41m"}


def _redacted(value: Any) -> Any:
    """A JSON field's value with every text in it redacted (structure kept)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; every text in it redacted (runtime/redaction.py)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry |= {k: _redacted(v) for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:  # formatted elsewhere (a sync task's process)
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, colour: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s  %(message)s", "%H:%M:%S")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))  # the message and its traceback
        if getattr(record, "run_bound", False):  # a task's own line: which run it belongs to, briefly
            first, newline, rest = line.partition("\n")
            line = f"{first}  [run={str(getattr(record, 'run_id', ''))[-8:]}]{newline}{rest}"
        if self.colour:
            colour = _COLOURS.get(record.levelname, "")
            line = f"{colour}{line}\033[0m"
        return line


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Set up the root logger from LOG_LEVEL and LOG_FORMAT."""
    stream = stream or sys.stderr
    # settings may come from a .env file or the emulator, not only the environment redact() reads
    for secret in (settings.dashboard_token, settings.redis_url, settings.database_url, settings.briefing_source_url):
        register_secret(secret)
    handler = logging.StreamHandler(stream)
    handler.addFilter(RunContextFilter())
    if settings.effective_log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(colour=hasattr(stream, "isatty") and stream.isatty()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # libraries' own per-message lines would duplicate ours
    for noisy in ("taskiq", "httpx", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

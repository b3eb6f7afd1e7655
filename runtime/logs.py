"""Logging: readable coloured text on a terminal, one JSON object per line in production."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from runtime.settings import Settings

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_COLOURS = {"DEBUG": "\033[2m", "INFO": "\033[36m", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[41m"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, colour: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s  %(message)s", "%H:%M:%S")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if self.colour:
            colour = _COLOURS.get(record.levelname, "")
            line = f"{colour}{line}\033[0m"
        return line


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Set up the root logger from LOG_LEVEL and LOG_FORMAT."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
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

"""Plain Python functions as HTTP endpoints and Redis-backed tasks.

from runtime import http, task, SkipRetry, RetryAfter, cancel, Context
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtime import lazy_imports

lazy_imports.install()  # before anything imports taskiq or SQLAlchemy (runtime/lazy_imports.py)

if TYPE_CHECKING:
    from runtime.app.connections import Runtime, cancel, session
    from runtime.app.context import Context
    from runtime.app.decorators import Failure, HttpFunction, TaskFunction, http, task
    from runtime.app.events import send_event
    from runtime.errors import ArgumentsError, ConfigError, ManifestError, RetryAfter, SkipRetry, StepFailed
    from runtime.settings import Settings, get_settings

# Imported on first use, so that `runtime worker` is importing nothing heavy yet when it pauses the
# garbage collector for its start-up (runtime/gc_pause.py), and `runtime --help` is quick.
_HOMES = {
    "Runtime": "runtime.app.connections",
    "cancel": "runtime.app.connections",
    "session": "runtime.app.connections",
    "Context": "runtime.app.context",
    "Failure": "runtime.app.decorators",
    "HttpFunction": "runtime.app.decorators",
    "TaskFunction": "runtime.app.decorators",
    "http": "runtime.app.decorators",
    "task": "runtime.app.decorators",
    "send_event": "runtime.app.events",
    "ArgumentsError": "runtime.errors",
    "ConfigError": "runtime.errors",
    "ManifestError": "runtime.errors",
    "RetryAfter": "runtime.errors",
    "SkipRetry": "runtime.errors",
    "StepFailed": "runtime.errors",
    "Settings": "runtime.settings",
    "get_settings": "runtime.settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "ArgumentsError",
    "ConfigError",
    "Context",
    "Failure",
    "HttpFunction",
    "ManifestError",
    "RetryAfter",
    "Runtime",
    "Settings",
    "SkipRetry",
    "StepFailed",
    "TaskFunction",
    "cancel",
    "get_settings",
    "http",
    "send_event",
    "session",
    "task",
]

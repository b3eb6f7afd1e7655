"""Plain Python functions as HTTP endpoints and Redis-backed tasks.

from runtime import http, task, SkipRetry, cancel, Context
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.connections import Runtime, cancel, session
    from runtime.context import Context
    from runtime.decorators import Failure, HttpFunction, TaskFunction, http, task
    from runtime.errors import ArgumentsError, ConfigError, ManifestError, SkipRetry
    from runtime.settings import Settings, get_settings

# Imported on first use, so that `runtime worker` is importing nothing heavy yet when it pauses the
# garbage collector for its start-up (runtime/gc_pause.py), and `runtime --help` is quick.
_HOMES = {
    "Runtime": "runtime.connections",
    "cancel": "runtime.connections",
    "session": "runtime.connections",
    "Context": "runtime.context",
    "Failure": "runtime.decorators",
    "HttpFunction": "runtime.decorators",
    "TaskFunction": "runtime.decorators",
    "http": "runtime.decorators",
    "task": "runtime.decorators",
    "ArgumentsError": "runtime.errors",
    "ConfigError": "runtime.errors",
    "ManifestError": "runtime.errors",
    "SkipRetry": "runtime.errors",
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
    "Runtime",
    "Settings",
    "SkipRetry",
    "TaskFunction",
    "cancel",
    "get_settings",
    "http",
    "session",
    "task",
]

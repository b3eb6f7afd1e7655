"""Plain Python functions as HTTP endpoints and Redis-backed tasks.

from runtime import http, task, SkipRetry, cancel, Context
"""

from runtime.connections import Runtime, cancel, session
from runtime.context import Context
from runtime.decorators import Failure, HttpFunction, TaskFunction, http, task
from runtime.errors import ArgumentsError, ConfigError, ManifestError, SkipRetry
from runtime.settings import Settings, get_settings

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

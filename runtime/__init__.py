"""Plain Python functions as HTTP endpoints and Redis-backed tasks.

from runtime import http, task, SkipRetry
"""

from runtime.connections import Runtime, session
from runtime.decorators import Failure, HttpFunction, TaskFunction, http, task
from runtime.errors import ArgumentsError, ConfigError, ManifestError, SkipRetry
from runtime.settings import Settings, get_settings

__all__ = [
    "ArgumentsError",
    "ConfigError",
    "Failure",
    "HttpFunction",
    "ManifestError",
    "Runtime",
    "Settings",
    "SkipRetry",
    "TaskFunction",
    "get_settings",
    "http",
    "session",
    "task",
]

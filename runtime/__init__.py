"""Plain Python functions as HTTP endpoints and Redis-backed tasks.

    from runtime import http, task, SkipRetry
"""

from runtime.errors import ArgumentsError, ManifestError, SkipRetry

__all__ = ["ArgumentsError", "ManifestError", "SkipRetry"]

"""Queue behaviours as taskiq middlewares, one module each, composed by the worker."""

from runtime.middleware.dead_letters import DeadLetterMiddleware
from runtime.middleware.log_context import LogContextMiddleware
from runtime.middleware.metrics import MetricsMiddleware
from runtime.middleware.records import RunRecordMiddleware
from runtime.middleware.retries import RetryMiddleware, backoff
from runtime.middleware.task_log import TaskLogMiddleware
from runtime.middleware.unique import UniqueMiddleware

# the tracing middleware (runtime.middleware.tracing) is imported by the worker only when tracing is on
__all__ = [
    "DeadLetterMiddleware",
    "LogContextMiddleware",
    "MetricsMiddleware",
    "RetryMiddleware",
    "RunRecordMiddleware",
    "TaskLogMiddleware",
    "UniqueMiddleware",
    "backoff",
]

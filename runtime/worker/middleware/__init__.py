"""Queue behaviours as taskiq middlewares, one module each, composed by the worker."""

from runtime.worker.middleware.dead_letters import DeadLetterMiddleware
from runtime.worker.middleware.log_context import LogContextMiddleware
from runtime.worker.middleware.metrics import MetricsMiddleware
from runtime.worker.middleware.records import RunRecordMiddleware
from runtime.worker.middleware.retries import RetryMiddleware, backoff
from runtime.worker.middleware.task_log import TaskLogMiddleware
from runtime.worker.middleware.unique import UniqueMiddleware

# the tracing middleware (runtime.worker.middleware.tracing) is imported by the worker only when tracing is on
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

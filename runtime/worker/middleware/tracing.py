"""Tracing of runs: a consumer span per attempt, a child of the context its message carries (the enqueue's
producer span), so the attempt joins the trace of the request that enqueued it. Its status is the outcome;
a failure records the exception. Loaded only when tracing is on (it imports OpenTelemetry).

Last in the worker's list: the span is current while the other middlewares run, so a retry's enqueue
(RetryMiddleware) continues the same trace. Its span and context token live in a context variable of the
attempt's own asyncio task, so an attempt stopped midway (its lease lost) leaves nothing behind.
"""

from __future__ import annotations

import contextvars
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

_attempt: contextvars.ContextVar[tuple[Span, object] | None] = contextvars.ContextVar("traced_attempt", default=None)


class TracingMiddleware(TaskiqMiddleware):
    def __init__(self) -> None:
        super().__init__()
        self.tracer = trace.get_tracer("runtime")

    def _start(self, message: TaskiqMessage) -> Span:
        labels = message.labels
        parent = propagate.extract({k: v for k, v in labels.items() if isinstance(v, str)})
        span = self.tracer.start_span(
            f"run {message.task_name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "redis",
                "messaging.destination.name": str(labels.get("queue") or "default"),
                "messaging.message.id": message.task_id,
                "run.id": message.task_id,
                "run.function": message.task_name,
                "run.attempt": int(labels.get("attempt", 1)),
            },
        )
        in_span = trace.set_span_in_context(span)
        if "traceparent" not in labels:  # enqueued untraced: the attempt starts the trace, and the run keeps it
            propagate.inject(labels, context=in_span)
        _attempt.set((span, context.attach(in_span)))
        return span

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        self._start(message)
        return message

    def on_error(self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException) -> None:
        current = _attempt.get()
        # an attempt that died with its worker never passed pre_execute: its span starts now
        span = current[0] if current is not None else self._start(message)
        span.record_exception(exception)
        span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"[:300]))

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        current = _attempt.get()
        if current is None:
            return
        span, token = current
        _attempt.set(None)
        outcome = message.labels.get("outcome")
        if outcome:
            span.set_attribute("run.outcome", str(outcome))
        if not result.is_err:
            span.set_status(Status(StatusCode.OK))
        span.end()
        context.detach(token)  # type: ignore[arg-type]

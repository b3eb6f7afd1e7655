"""Tracing: OpenTelemetry spans for each HTTP request, each enqueue and each attempt of a run.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set; then `setup_tracing` imports OpenTelemetry (the `[otel]`
extra), exports spans over OTLP/HTTP (unless the process already set a tracer provider of its own) and
instruments Redis, httpx and the run store's engine. Without the variable this module imports nothing
beyond the standard library, so start-up costs what it did. The W3C trace context travels in a message's
labels (`traceparent`, `tracestate`), as taskiq's own OpenTelemetry middleware carries it, so each attempt
joins the trace of the request that enqueued it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.types import ASGIApp

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
INSTALL = "tracing needs the otel extra: pip install 'first-sip-runtime[otel]'"
logger = logging.getLogger("runtime.tracing")

_enabled = False  # set up in this process
_engines: set[int] = set()  # ids of the engines instrumented


def requested() -> bool:
    """Whether the environment asks for tracing."""
    return bool(os.environ.get(ENDPOINT, "").strip())


def enabled() -> bool:
    """Whether tracing is set up in this process."""
    return _enabled


def setup_tracing(app: str, service: str, engine: Callable[[], AsyncEngine]) -> bool:
    """Turn tracing on for this process when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; False when it is not.
    `service` names the process kind (`web`, `worker`, ...) in `service.name` (`{app}-{service}`); `engine`
    gives the run store's, whose statements become spans (a function: a process made without tracing never makes
    it before its first query)."""
    global _enabled
    if not requested():
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    except ImportError:
        raise ConfigError(f"{ENDPOINT} is set, but {INSTALL}") from None
    if not _enabled:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):  # nobody set one: ours
            trace.set_tracer_provider(_otlp_provider(f"{app}-{service}"))
        RedisInstrumentor().instrument()
        HTTPXClientInstrumentor().instrument()
        _enabled = True
    sync_engine = engine().sync_engine
    if id(sync_engine) not in _engines:
        _engines.add(id(sync_engine))
        instrumentor = SQLAlchemyInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            # engines created after the first instrumentation are traced by its create_engine hook
            logger.debug("run store engine created before tracing started is not traced")
        else:
            # its declared range stops below SQLAlchemy 2.1, whose engine events it uses are unchanged
            instrumentor.instrument(engine=sync_engine, skip_dep_check=True)
    logger.info("tracing on: spans go to %s", os.environ.get(ENDPOINT))
    return True


def _otlp_provider(service_name: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, win over the default name
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads the OTEL_EXPORTER_OTLP_* variables
    return provider


def instrument_asgi(app: ASGIApp) -> ASGIApp:
    """The app wrapped so each HTTP request is a server span (the trace an enqueue joins)."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, excluded_urls="health,metrics", exclude_spans=["receive", "send"])


def inject(labels: dict[str, Any], function: str) -> None:
    """For an enqueue: a producer span, and its context written into the message's labels. A no-op while
    tracing is off."""
    if not _enabled:
        return
    from opentelemetry import propagate, trace

    tracer = trace.get_tracer("runtime")
    with tracer.start_as_current_span(f"enqueue {function}", kind=trace.SpanKind.PRODUCER) as span:
        span.set_attribute("messaging.system", "redis")
        span.set_attribute("messaging.destination.name", str(labels.get("queue", "default")))
        span.set_attribute("run.function", function)
        propagate.inject(labels)


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the span in progress, or None (also while tracing is off)."""
    if not _enabled:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def trace_id_of(labels: dict[str, Any]) -> str | None:
    """The trace id in a message's `traceparent` label (`00-<trace id>-<span id>-<flags>`), or None."""
    parent = labels.get("traceparent")
    if not isinstance(parent, str):
        return None
    parts = parent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    return parts[1]

"""Tracing: with OTEL_EXPORTER_OTLP_ENDPOINT set, one trace follows a request from the HTTP function through
`enqueue` to each attempt of the run, and the run record keeps its trace id; without it, OpenTelemetry is
never imported."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from runtime import Runtime, tracing
from runtime.settings import Settings
from runtime.web.app import create_web_app
from runtime.worker.worker import Worker
from tests.conftest import write_app

MODULE = f"traced_{uuid.uuid4().hex[:8]}"
SOURCE = """
from runtime import Context, SkipRetry, http, task

@http
async def start(request):
    body = await request.json()
    run_id = await work.enqueue(n=body["n"])
    return {"id": run_id}, 202

@task
async def work(n: int) -> int:
    if n < 0:
        raise SkipRetry("negative")
    if n == 0:
        raise ValueError("zero fails, then is retried")
    return n

async def _double(n):
    return 2 * n

@task
async def stepped(ctx: Context, n: int) -> int:
    return await ctx.step.run("double", _double, n)
"""
MANIFEST = f"""
app: trace-test
defaults: {{retries: 1, timeout: 30s, concurrency: 2}}
functions:
  start: {{handler: "{MODULE}:start", http: {{path: /start, methods: [POST]}}}}
  work: {{handler: "{MODULE}:work", task: {{}}}}
  stepped: {{handler: "{MODULE}:stepped", task: {{}}}}
"""

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("app"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, its spans kept in memory (a provider set before setup_tracing is kept, as a user's is)."""
    monkeypatch.setenv(tracing.ENDPOINT, "http://127.0.0.1:9/unused")
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    yield EXPORTER
    # leave the other tests of this process untraced
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    for instrumentor in (RedisInstrumentor(), HTTPXClientInstrumentor(), SQLAlchemyInstrumentor()):
        instrumentor.uninstrument()
    tracing._enabled = False
    tracing._engines.clear()


@pytest.fixture
async def rt(app: Path, redis_url: str, tmp_path: Path, traced: InMemorySpanExporter) -> AsyncIterator[Runtime]:
    runtime = Runtime.from_manifest(app, Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db"))
    await runtime.start()
    yield runtime
    await runtime.stop()


async def run_through(rt: Runtime, n: int) -> tuple[str, Any]:
    """POST /start {n} to the web app, let an in-process worker run the task; the run id and its record."""
    web = create_web_app(rt)
    worker = Worker(rt)
    running = asyncio.create_task(worker.run())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://test") as client:
            response = await client.post("/start", json={"n": n})
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        run = await rt.wait(run_id, timeout=30)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
    return run_id, run


def spans(exporter: InMemorySpanExporter, kind: SpanKind, prefix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is kind and s.name.startswith(prefix)]


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


async def test_one_trace_follows_a_request_through_enqueue_to_the_attempt(rt: Runtime) -> None:
    run_id, run = await run_through(rt, 7)
    assert run.status == "succeeded"
    [server] = [s for s in EXPORTER.get_finished_spans() if s.kind is SpanKind.SERVER]
    [producer] = spans(EXPORTER, SpanKind.PRODUCER, "enqueue work")
    [consumer] = spans(EXPORTER, SpanKind.CONSUMER, "run work")
    assert trace_id(server) == trace_id(producer) == trace_id(consumer)
    assert consumer.parent is not None and producer.context is not None
    assert consumer.parent.span_id == producer.context.span_id  # the attempt is the enqueue's child
    assert consumer.attributes is not None and consumer.attributes["run.id"] == run_id
    assert consumer.status.status_code is StatusCode.OK
    assert run.trace_id == trace_id(server)
    # Redis and the run store are instrumented too: their spans are in the same trace
    in_trace = {s.name for s in EXPORTER.get_finished_spans() if trace_id(s) == run.trace_id}
    assert any(name.startswith(("XADD", "EVALSHA", "EVAL", "ZADD")) for name in in_trace), in_trace
    assert any(name.split()[0] in ("INSERT", "SELECT", "UPDATE") for name in in_trace), in_trace


async def test_a_durable_runs_step_is_saved_as_a_database_span_of_its_trace(rt: Runtime) -> None:
    """While tracing, the step journal goes through SQLAlchemy's engine (runtime/store/step_engine.py), so a step's
    save shows as a database span in its run's trace; untraced it goes through the driver, unseen."""
    worker = Worker(rt)
    running = asyncio.create_task(worker.run())
    try:
        run = await rt.wait(await rt.app.tasks["stepped"].enqueue(n=4), timeout=30)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
    assert (run.status, run.result) == ("succeeded", 8)
    statements = [
        str((s.attributes or {}).get("db.statement", ""))
        for s in EXPORTER.get_finished_spans()
        if trace_id(s) == run.trace_id
    ]
    assert any(text.startswith("INSERT INTO steps") for text in statements), statements
    [step] = await rt.store.steps.of_run(run.id)
    assert (step["name"], step["status"]) == ("double", "succeeded")


async def test_a_failing_attempt_span_has_error_status_and_the_exception(rt: Runtime) -> None:
    _, run = await run_through(rt, -1)
    assert run.status == "failed"
    [consumer] = spans(EXPORTER, SpanKind.CONSUMER, "run work")
    assert consumer.status.status_code is StatusCode.ERROR
    assert "negative" in (consumer.status.description or "")
    assert [e.name for e in consumer.events] == ["exception"]
    assert run.trace_id == trace_id(consumer)


async def test_each_retry_is_an_attempt_span_in_the_same_trace(rt: Runtime) -> None:
    _, run = await run_through(rt, 0)
    assert run.status == "failed" and run.attempts == 2
    attempts = spans(EXPORTER, SpanKind.CONSUMER, "run work")
    assert sorted(s.attributes["run.attempt"] for s in attempts if s.attributes) == [1, 2]
    assert {trace_id(s) for s in attempts} == {run.trace_id}
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)


async def run_on(worker: Worker, rt: Runtime, run_id: str) -> Any:
    """Run the in-process worker until the run has finished; its record."""
    running = asyncio.create_task(worker.run())
    try:
        return await rt.wait(run_id, timeout=30)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)


async def test_a_run_enqueued_outside_any_span_starts_its_own_trace_and_keeps_it(rt: Runtime) -> None:
    """A script's (or the scheduler's) enqueue has no request around it: its producer span begins a trace,
    the record has that trace id from the start, and the attempt joins it."""
    worker = Worker(rt)  # sets tracing up in this process, as any process of ours does
    run_id = await rt.app.tasks["work"].enqueue(n=3)
    queued = await rt.store.get(run_id)
    assert queued is not None and queued.trace_id  # before any worker touched it
    run = await run_on(worker, rt, run_id)
    [producer] = spans(EXPORTER, SpanKind.PRODUCER, "enqueue work")
    [consumer] = spans(EXPORTER, SpanKind.CONSUMER, "run work")
    assert run.trace_id == queued.trace_id == trace_id(producer) == trace_id(consumer)


async def test_an_untraced_enqueue_gets_the_trace_its_attempt_starts(rt: Runtime) -> None:
    """The enqueuer does not trace (its message carries no context) but the worker does: the attempt's span
    starts a trace, and the run's record keeps its id."""
    worker = Worker(rt)
    tracing._enabled = False
    try:
        run_id = await rt.app.tasks["work"].enqueue(n=4)
    finally:
        tracing._enabled = True
    run = await run_on(worker, rt, run_id)
    [consumer] = spans(EXPORTER, SpanKind.CONSUMER, "run work")
    assert run.trace_id == trace_id(consumer)


# --- without the variable, and through a real OTLP exporter -----------------------------------------------

NOTHING_IMPORTED = """
import asyncio, os, sys
import redis  # redis-py 8 imports OpenTelemetry's metrics API itself when it is installed
before = {m for m in sys.modules if m.startswith("opentelemetry")}
from runtime import Runtime
from runtime.settings import Settings
from runtime.web.app import create_web_app
from runtime.worker.worker import Worker

async def main():
    rt = Runtime.from_manifest(sys.argv[1], Settings(redis_url=sys.argv[2], database_url=sys.argv[3]))
    await rt.start()
    create_web_app(rt)
    Worker(rt)
    await rt.app.tasks["work"].enqueue(n=1)
    await rt.stop()

asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith("opentelemetry") and m not in before))
"""


def test_without_the_variable_opentelemetry_is_never_imported(app: Path, redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", NOTHING_IMPORTED, str(app), redis_url, f"sqlite:///{tmp_path}/r.db"],
        cwd=app.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr


class Collector(http.server.BaseHTTPRequestHandler):
    """A tiny OTLP/HTTP receiver: keeps the path, content type and size of each POST."""

    received: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, self.headers.get("Content-Type", ""), len(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_worker_joins_the_enqueuers_trace_and_exports_it_over_otlp_http(
    collector: str, app: Path, redis_url: str, tmp_path: Path, spawn: Any, traced: InMemorySpanExporter
) -> None:
    env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/r.db",
        "WORKER_HEALTH_PORT": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not 5 s
        "LOG_FORMAT": "json",
    }
    worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env)
    worker.wait_for("ready")

    async def enqueue() -> Any:
        async with Runtime.from_manifest(app, Settings(redis_url=redis_url, database_url=env["DATABASE_URL"])) as rt:
            assert tracing.setup_tracing(rt.app.name, "script", lambda: rt.store.engine)
            with trace.get_tracer("test").start_as_current_span("a script"):
                run_id = await rt.app.tasks["work"].enqueue(n=3)
            return await rt.wait(run_id, timeout=30)

    run = asyncio.run(enqueue())
    assert run.status == "succeeded" and run.trace_id
    # the worker's lines about the run carry the trace it joined (from the message's labels)
    done = json.loads(worker.wait_for(f"done work {run.id}"))
    assert done["trace_id"] == run.trace_id
    deadline = time.monotonic() + 10
    while not Collector.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Collector.received, worker.output
    path, content_type, size = Collector.received[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf" and size > 0


def test_without_the_extra_a_process_says_which_to_install(app: Path, redis_url: str, tmp_path: Path) -> None:
    # an `opentelemetry` that cannot be imported, ahead of the installed one: as if the extra were missing
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")} | {
        "PYTHONPATH": str(shadow.parent),
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/r.db",
        "WORKER_HEALTH_PORT": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
    }
    out = subprocess.run(
        [str(Path(sys.executable).parent / "runtime"), "worker", "--manifest", str(app)],
        cwd=app.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "otel" in line]
    assert len(lines) == 1 and "pip install 'first-sip-runtime[otel]'" in lines[0], out.stdout + out.stderr
    assert "Traceback" not in out.stderr

"""Hot-reload benchmark: save -> first response with the new body, and failed requests meanwhile.

An editor loop rewrites the route's module (a counter in the body) a bounded number of times; a
poller process (`bench.poller`) requests the route continuously. Latency = the poller's time of the
first 200 carrying the new counter minus the time the write finished. Failed requests (connection
errors, timeouts, non-200) are counted over the whole run. Baseline: `uvicorn --reload` on a bare
Starlette app; ours: `emulator up` on the same route written as an `@http` function.
"""

from __future__ import annotations

import json
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs, web
from bench.redis_server import RedisServer
from bench.stats import percentile
from bench.systems import _check_emulator, emulator_argv, uvicorn_argv

STARLETTE_MODULE = """\
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request):
    return JSONResponse({{"hello": "world", "edit": {edit}}})


app = Starlette(routes=[Route("/hello", hello, methods=["GET"])])
"""

OURS_MODULE = """\
from runtime import http


@http
async def hello(request):
    return {{"hello": "world", "edit": {edit}}}
"""

OURS_MANIFEST = """\
app: benchreload
functions:
  hello:
    handler: reload_functions:hello
    http: {path: /hello, methods: [GET]}
"""

# The same route in an app that also has sync tasks (they run in a pool of child processes, which a
# reload must not make the new route wait for)
OURS_SYNC_MODULE = """\
import hashlib

from runtime import http, task


@http
async def hello(request):
    return {{"hello": "world", "edit": {edit}}}


@task
def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@task
def shout(text: str) -> str:
    return text.upper()
"""

OURS_SYNC_MANIFEST = """\
app: benchreloadsync
functions:
  hello:
    handler: reload_functions:hello
    http: {path: /hello, methods: [GET]}
  digest:
    handler: reload_functions:digest
    task: {}
  shout:
    handler: reload_functions:shout
    task: {}
"""

EDIT_TIMEOUT_S = 20.0


@dataclass
class ReloadSystem:
    key: str
    label: str
    module_file: str
    template: str
    prepare: Callable[[Path], None]
    argv: Callable[[Path, int], list[str]]
    check: Callable[[], str | None]
    redis: bool = False
    env: dict[str, str] | None = None


RELOAD_SYSTEMS = [
    ReloadSystem(
        key="ours",
        label="ours (emulator up)",
        module_file="reload_functions.py",
        template=OURS_MODULE,
        prepare=lambda d: (d / "manifest.yaml").write_text(OURS_MANIFEST),
        argv=lambda d, port: emulator_argv(d / "manifest.yaml", port),
        check=_check_emulator,
        redis=True,
    ),
    ReloadSystem(
        key="ours-sync",
        label="ours (emulator up), an app with sync tasks",
        module_file="reload_functions.py",
        template=OURS_SYNC_MODULE,
        prepare=lambda d: (d / "manifest.yaml").write_text(OURS_SYNC_MANIFEST),
        argv=lambda d, port: emulator_argv(d / "manifest.yaml", port),
        check=_check_emulator,
        redis=True,
    ),
    ReloadSystem(
        key="uvicorn",
        label="uvicorn --reload (bare Starlette)",
        module_file="reload_app.py",
        template=STARLETTE_MODULE,
        prepare=lambda d: None,
        argv=lambda d, port: uvicorn_argv("reload_app:app", port, reload=True),
        check=lambda: None,
        # CPython trusts a cached .pyc whose source has the same size and mtime second: two same-size edits within
        # a second would serve the first one's code for good (uvicorn has no guard; the emulator checks its
        # sources), so the baseline writes no bytecode, as a uvicorn user's seconds-apart saves never hit this
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    ),
]

BASELINE_RELOAD = "uvicorn"


def _reader(stream: Any, events: queue.Queue[dict[str, Any]]) -> None:
    for raw in iter(stream.readline, b""):
        try:
            events.put(json.loads(raw))
        except ValueError:
            pass


def _edit_of(body: str) -> int | None:
    try:
        return int(json.loads(body).get("edit"))
    except (ValueError, TypeError, AttributeError):
        return None


def reload_run(system: ReloadSystem, redis: RedisServer, edits: int, tmpdir: Path, tag: str) -> dict[str, Any]:
    appdir = Path(tempfile.mkdtemp(prefix=f"reload-{system.key}-", dir=tmpdir))
    module = appdir / system.module_file
    module.write_text(system.template.format(edit=0))
    system.prepare(appdir)
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}/hello"
    extra = ({"REDIS_URL": redis.url} if system.redis else {}) | (system.env or {})
    env = procs.child_env(extra)
    log = tmpdir / f"reload-{system.key}-{tag}.log"
    server = procs.spawn(system.argv(appdir, port), env=env, cwd=appdir, log=log)
    latencies: list[float] = []
    edits_with_failures = 0
    try:
        with procs.running(server, sig=2), procs.PeakRss(server.pid) as rss:
            web.wait_http_ok(url, server, timeout=60, log=log)
            poller = procs.spawn(
                [sys.executable, "-m", "bench.poller", url, str(edits * (EDIT_TIMEOUT_S + 1) + 30)],
                env=procs.child_env(),
                stdout_pipe=True,
            )
            events: queue.Queue[dict[str, Any]] = queue.Queue()
            reader = threading.Thread(target=_reader, args=(poller.stdout, events), daemon=True)
            reader.start()
            summary: dict[str, Any] = {}
            try:
                time.sleep(0.5)
                for i in range(1, edits + 1):
                    module.write_text(system.template.format(edit=i))
                    saved = time.time()
                    deadline = time.monotonic() + EDIT_TIMEOUT_S
                    failed = False
                    while True:
                        try:
                            ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
                        except queue.Empty:
                            raise TimeoutError(f"edit {i}: new body not served within {EDIT_TIMEOUT_S:.0f}s") from None
                        if "error" in ev:
                            failed = True
                        elif "body" in ev and _edit_of(ev["body"]) == i:
                            latencies.append((ev["t"] - saved) * 1000)
                            break
                    edits_with_failures += failed
                    time.sleep(random.uniform(0.3, 0.5))  # settle, at a random phase of any watcher
            finally:
                procs.stop(poller, grace=5)
                reader.join(timeout=5)
                while not events.empty():
                    ev = events.get()
                    if "requests" in ev:
                        summary = ev
            peak = rss.peak
    finally:
        shutil.rmtree(appdir, ignore_errors=True)
    return {
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "edits": len(latencies),
        "failed_requests": summary.get("failures"),
        "requests": summary.get("requests"),
        "edits_with_failures": edits_with_failures,
        "peak_rss_mb": peak / 2**20,
    }


def reload_system(key: str) -> ReloadSystem:
    return next(s for s in RELOAD_SYSTEMS if s.key == key)

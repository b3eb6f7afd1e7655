"""Emulator start-up: `emulator up` spawn -> the line containing `ready` (embedded Redis included).

Run in a throw-away copy of `bench/apps/ours` with no REDIS_URL or DATABASE_URL, as a developer
runs it the first time: the emulator starts its own Redis and SQLite under `.emulator/`.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import procs, web
from bench.systems import OURS_DIR, VENV_BIN, emulator_argv


def emulator_startup(
    tmpdir: Path, tag: str, timeout: float = 60, wrap: tuple[str, ...] = (), bin_dir: Path = VENV_BIN
) -> dict[str, Any]:
    """`emulator up` in a copy of the bench app, from `bin_dir`'s venv; `wrap` is put before its argv (a profiler)."""
    appdir = Path(tempfile.mkdtemp(prefix="emulator-", dir=tmpdir))
    for name in ("manifest.yaml", "bench_functions.py"):
        shutil.copy(OURS_DIR / name, appdir / name)
    port = procs.free_port()
    cmd = [*wrap, *emulator_argv(appdir / "manifest.yaml", port, bin_dir)]
    lines: queue.Queue[tuple[float, str]] = queue.Queue()
    output: list[str] = []
    spawned = time.time()
    proc = procs.spawn(cmd, env=procs.child_env(), cwd=appdir, stdout_pipe=True)

    def read() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            lines.put((time.time(), raw.decode(errors="replace").rstrip()))

    threading.Thread(target=read, daemon=True).start()
    try:
        with procs.running(proc, sig=2), procs.PeakRss(proc.pid) as rss:
            deadline = time.monotonic() + timeout
            ready_at = None
            while ready_at is None:
                try:
                    t, line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    raise TimeoutError(
                        f"no line containing 'ready' within {timeout:.0f}s: {' | '.join(output[-10:])}"
                    ) from None
                output.append(line)
                if "ready" in line.lower():
                    ready_at = t
            web.wait_http_ok(f"http://127.0.0.1:{port}/hello", proc, timeout=30)
            served_at = time.time()
            time.sleep(1.0)  # let the worker and scheduler settle before the last RSS sample
            peak = max(rss.peak, rss.sample())
    finally:
        shutil.rmtree(appdir, ignore_errors=True)
    return {
        "ready_s": ready_at - spawned,
        "first_200_s": served_at - spawned,
        "peak_rss_mb": peak / 2**20,
    }

"""`runtime worker --processes N`: N worker processes under one supervisor, for single-machine deployments.

Each child is `runtime worker` (same manifest and options) with its own health port on loopback. The
supervisor restarts a child that dies (with a growing pause, logged), forwards SIGTERM/SIGINT so each child
drains (SHUTDOWN_TIMEOUT), and serves the worker health port itself: /health is 200 only when every child's
/health is, /health/live while the supervisor runs, /metrics concatenates the children's, each sample
labelled `process="<n>"`. A child dies with the supervisor (PR_SET_PDEATHSIG), even if it is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from runtime.ops.health import HealthServer

logger = logging.getLogger("runtime.processes")

MAX_BACKOFF = 30.0  # seconds between restarts of a child that keeps dying
STEADY = 30.0  # a child that lived this long starts its next backoff from 1 s again


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: SIGTERM (a drain) when the supervisor dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    started: float = 0.0
    backoff: float = 1.0
    restart_at: float = 0.0
    restarts: int = 0
    exits: list[int] = field(default_factory=list)


async def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path -> (status, body); (0, reason) when the child does not answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".encode())
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
    except (OSError, TimeoutError) as exc:
        return 0, f"{type(exc).__name__}: {exc}".encode()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return 0, b"no HTTP answer"


def label_metrics(text: str, process: int, seen: set[str]) -> list[str]:
    """One child's Prometheus text with `process="<n>"` on every sample; HELP/TYPE lines once overall."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            if line not in seen:
                seen.add(line)
                out.append(line)
            continue
        name_labels, _, value = line.rpartition(" ")
        if "{" in name_labels:
            name, _, labels = name_labels.partition("{")
            out.append(f'{name}{{process="{process}",{labels} {value}')
        else:
            out.append(f'{name_labels}{{process="{process}"}} {value}')
    return out


class Supervisor:
    """Runs `count` worker processes with `worker_args` (the options after `runtime worker`)."""

    def __init__(self, count: int, worker_args: list[str], shutdown_timeout: float) -> None:
        self.children = [Child(i) for i in range(count)]
        self.worker_args = worker_args
        self.shutdown_timeout = shutdown_timeout
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.stopping.set()

    def _start(self, child: Child) -> None:
        child.port = _free_port()
        env = os.environ | {"WORKER_HEALTH_PORT": str(child.port), "HEALTH_HOST": "127.0.0.1"}
        child.process = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "worker", *self.worker_args],
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor, which forwards it once
            preexec_fn=_die_with_parent,
        )
        child.started = time.monotonic()
        logger.info("worker process %d started (pid %d)", child.index, child.process.pid)

    async def run(self, health_port: int | None, host: str) -> int:
        health = None
        if health_port:
            health = HealthServer(self._ready, self._live, metrics=self._metrics)
            port = await health.start(host, health_port)
            logger.info("supervisor health on http://%s:%d/health", host, port)
        for child in self.children:
            self._start(child)
        try:
            while not self.stopping.is_set():
                self._watch()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 0.2)
        finally:
            await self._drain()
            if health is not None:
                await health.stop()
        return 0

    def _watch(self) -> None:
        """Restart children that exited, each after its backoff."""
        now = time.monotonic()
        for child in self.children:
            if child.process is not None and (code := child.process.poll()) is not None:
                child.exits.append(code)
                if now - child.started > STEADY:
                    child.backoff = 1.0
                logger.warning(
                    "worker process %d (pid %d) exited with code %d; restarting it in %.0f s",
                    child.index,
                    child.process.pid,
                    code,
                    child.backoff,
                )
                child.process = None
                child.restart_at = now + child.backoff
                child.backoff = min(child.backoff * 2, MAX_BACKOFF)
            if child.process is None and now >= child.restart_at:
                child.restarts += 1
                self._start(child)

    async def _drain(self) -> None:
        """SIGTERM every child (each lets its running tasks finish), then SIGKILL any still there."""
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        logger.info("stopping %d worker process(es)", len(running))
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + 10  # their drain, plus closing connections
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for process in running:
            if process.poll() is None:
                logger.error("worker process pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()

    async def _children(self, path: str) -> list[tuple[Child, int, bytes]]:
        async def one(child: Child) -> tuple[Child, int, bytes]:
            if child.process is None or child.process.poll() is not None:
                return child, 0, b"not running (restarting)"
            status, body = await _get(child.port, path)
            return child, status, body

        return list(await asyncio.gather(*(one(c) for c in self.children)))

    async def _ready(self) -> tuple[int, dict[str, Any]]:
        answers = await self._children("/health")
        ok = all(status == 200 for _, status, _ in answers) and not self.stopping.is_set()
        processes = []
        for child, status, body in answers:
            entry: dict[str, Any] = {"process": child.index, "restarts": child.restarts, "ready": status == 200}
            if child.process is not None:
                entry["pid"] = child.process.pid
            if status != 200:
                entry["reason"] = body.decode(errors="replace")[:200]
            processes.append(entry)
        return (200 if ok else 503), {"status": "ok" if ok else "unavailable", "processes": processes}

    async def _live(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ok", "processes": len(self.children)}

    async def _metrics(self) -> tuple[bytes, str]:
        seen: set[str] = set()
        lines: list[str] = []
        for child, status, body in await self._children("/metrics"):
            if status == 200:
                lines.extend(label_metrics(body.decode(errors="replace"), child.index, seen))
        return ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4; charset=utf-8"


async def supervise(count: int, worker_args: list[str]) -> int:
    """`runtime worker --processes N`: the supervisor's life, from start to the children's drain."""
    from runtime.logs import configure_logging
    from runtime.settings import get_settings

    settings = get_settings()
    configure_logging(settings)
    supervisor = Supervisor(count, worker_args, settings.shutdown_timeout)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop)
    return await supervisor.run(settings.worker_health_port or None, settings.health_host)

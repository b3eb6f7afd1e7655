"""The emulator's supervisor: a warm parent that owns the ports, the embedded Redis and the file watcher,
and forks a fresh child (emulator/child.py) for each version of the user's code.

The parent has the runtime's dependencies imported but never the user's code, so a reload costs a
fork plus importing only what changed. The listening sockets belong to the parent and are inherited:
the old child serves until the new one is ready, then stops accepting at once and finishes what it
has (running tasks included), so no request fails and no task is lost across a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.util
import json
import logging
import os
import select
import signal
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# watchfiles' watcher object: unlike its `watch()` generator, it is watching once constructed
from watchfiles._rust_notify import RustNotify

from emulator.child import LATER_IMPORTS, STARTUP_IMPORTS, preload, run_child
from emulator.data_dir import prepare_data_dir
from emulator.embedded_redis import EmbeddedRedis
from runtime import gc_pause
from runtime.app.manifest_file import load_manifest
from runtime.errors import ConfigError, ManifestError
from runtime.logs import configure_logging
from runtime.redaction import redact
from runtime.settings import Settings
from runtime.store.sqlite_schema import prepare_url
from runtime.store.values import database_errors

# watchfiles ends a batch of changes once a step passes with none new (a save's events come well within one), or
# after DEBOUNCE of changes that keep coming. A save waits 1 to 2 steps before its reload starts; a shorter step
# costs the idle watcher more wake-ups (2 ms: about 2% of a core, 10 ms: 1%).
WATCH_STEP_MS = 2
WATCH_DEBOUNCE_MS = 400
WATCH_TIMEOUT_MS = 500  # the longest a watch returns nothing, so that exited generations are reaped

IGNORED_DIRS = {
    ".emulator",
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "node_modules",
    ".tox",
    "build",
    "dist",
}


def _private_file(path: Path) -> None:
    """Create `path` readable by its owner only (SQLite gives its -wal and -shm files the same mode)."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    path.chmod(0o600)


class PortInUse(Exception):
    pass


def bind(host: str, port: int, flag: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OverflowError:  # a port past 65535
        sock.close()
        raise PortInUse(
            f"cannot listen on port {port}: a port is a number from 0 to 65535; choose another with {flag}"
        ) from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is already in use; choose another with {flag} PORT") from None
        raise PortInUse(f"cannot listen on {host}:{port} ({exc.strerror}); choose another with {flag}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class Generation:
    """One forked child and the pipe it reports on."""

    pid: int
    pipe: int

    def outcome(self, timeout: float = 60.0) -> tuple[str, str]:
        """('ready', json list of the app's files) or ('error', message), as the child reports it."""
        deadline = time.monotonic() + timeout
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "error", f"the app did not start within {timeout:.0f} s"
            readable, _, _ = select.select([self.pipe], [], [], min(remaining, 0.5))
            if readable:
                chunk = os.read(self.pipe, 65536)
                if not chunk:
                    return "error", "the app process exited while starting (see the log above)"
                buffer += chunk
        kind, _, payload = buffer.split(b"\n", 1)[0].decode().partition(" ")
        if kind == "ready":
            return "ready", payload
        return "error", json.loads(payload)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        with contextlib.suppress(OSError):
            os.close(self.pipe)


def is_source(path: str, root: Path, manifest: Path, sources: set[str] | None) -> bool:
    """The manifest and the app's own modules trigger a reload: the files the running app imported, or,
    while the app is broken (`sources` is None), any Python file under the app's folder."""
    candidate = Path(path)
    if candidate == manifest:
        return True
    if candidate.suffix != ".py":
        return False
    if sources is not None:
        return path in sources
    try:
        parts = candidate.relative_to(root).parts
    except ValueError:
        return False
    return not any(part in IGNORED_DIRS or part.startswith(".") for part in parts[:-1])


class Emulator:
    def __init__(
        self,
        manifest: Path,
        host: str,
        port: int,
        dashboard_port: int,
        reload: bool,
        started: float,
        redis: EmbeddedRedis | None = None,
    ) -> None:
        self.manifest = manifest.resolve()
        self.root = self.manifest.parent
        self.data = self.root / ".emulator"
        self.host = host
        self.port = port
        self.dashboard_port = dashboard_port
        self.reload = reload
        self.started = started
        self.redis = redis  # spawned early by `emulator up` (cli._boot_redis), or here when needed
        self.current: Generation | None = None
        self.retiring: list[Generation] = []
        self.stop_event = threading.Event()
        self.sources: set[str] | None = None

    def say(self, line: str) -> None:
        print(line, flush=True)

    def up(self) -> int:
        try:
            manifest = load_manifest(self.manifest)  # fail fast on a missing or unreadable manifest
        except ManifestError as exc:
            if not self.manifest.exists():
                print(f"error: {exc}", file=sys.stderr)
                return 1
            manifest = None
        try:
            sockets = [bind(self.host, self.port, "--port"), bind(self.host, self.dashboard_port, "--dashboard-port")]
        except PortInUse as exc:
            print(f"error: {exc}", file=sys.stderr)
            self._stop_redis()
            return 1
        prepare_data_dir(self.root)
        _private_file(self.data / "runs.db")
        try:
            settings = self._settings()
            self._upgrade_run_store(settings)  # while the embedded Redis boots
            if self.redis is not None:
                self.redis.wait_ready()
        except (ConfigError, RuntimeError) as exc:  # RuntimeError: the embedded Redis did not start
            print(f"error: {exc}", file=sys.stderr)
            self._stop_redis()
            return 1
        configure_logging(settings)
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop_event.set())
        try:
            self.current = self._spawn(settings, sockets)
            # watch before announcing `ready` (and while the child starts), so no save is missed
            watcher = RustNotify([str(self.root)], False, False, 300, True, True) if self.reload else None
            status, message = self.current.outcome()
            self.sources = set(json.loads(message)) if status == "ready" else None
            web = f"http://{self.host}:{sockets[0].getsockname()[1]}"
            dashboard = f"http://{self.host}:{sockets[1].getsockname()[1]}"
            self._write_state(web, dashboard, settings)
            self.say(f"  functions  {web}")
            if manifest is not None:
                for spec in manifest.routes().values():
                    assert spec.http is not None
                    self.say(f"             {','.join(spec.http.methods):<6} {web}{spec.http.path}")
            self.say(f"  dashboard  {dashboard}")
            embedded = " (embedded; data in .emulator/redis)" if self.redis else ""
            self.say(f"  redis      {redact(settings.redis_url)}{embedded}")
            self.say(f"  database   {redact(settings.database_url)}")
            if status == "error":
                self.say(f"error: the app failed to load; fix it and save:\n{message}")
            elapsed = time.time() - self.started
            self.say(
                f"emulator ready in {elapsed:.2f} s"
                + (" — watching for changes (Ctrl-C to stop)" if self.reload else "")
            )
            # for the next generations, once the first has a core to itself (it imports what it needs); a save
            # meanwhile is seen (the watcher is on)
            preload((*STARTUP_IMPORTS, *LATER_IMPORTS))
            gc_pause.resume()
            if watcher is not None:
                with watcher:
                    self._watch(watcher, settings, sockets)
            else:
                while not self.stop_event.wait(0.5):
                    self._reap()
        finally:
            self._shutdown(settings)
        return 0

    def _settings(self) -> Settings:
        env: dict[str, object] = {}
        if not os.environ.get("REDIS_URL"):
            if self.redis is None:
                self.redis = EmbeddedRedis(self.data / "redis")
                self.redis.spawn()
            env["redis_url"] = self.redis.url  # its port is chosen; `up` waits for it to answer
        if not os.environ.get("DATABASE_URL"):
            env["database_url"] = f"sqlite:///{self.data / 'runs.db'}"
        env.setdefault("worker_health_port", 0)
        try:
            return Settings(**env)  # type: ignore[arg-type]
        except Exception as exc:
            raise ConfigError(str(exc).replace("\n", " ")) from None

    def _upgrade_run_store(self, settings: Settings) -> None:
        """Bring the run store's schema up to date before any process opens it (`runtime db upgrade`): a new SQLite
        store, or one at the head, without SQLAlchemy or Alembic (runtime/store/sqlite_schema.py); else with them."""
        try:
            done = prepare_url(settings.database_url)
            if done is None:
                from runtime.store.migrations import upgrade

                done = asyncio.run(upgrade(settings.database_url))
            before, after = done
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot use the database at DATABASE_URL={redact(settings.database_url)}: {str(exc).splitlines()[0]}"
            ) from None
        except database_errors() as exc:
            raise ConfigError(
                f"cannot use the database at DATABASE_URL={redact(settings.database_url)}: {str(exc).splitlines()[0]}"
            ) from None
        if before is not None and before != after:
            self.say(f"  database   upgraded the run store from {before} to {after}")

    def _write_state(self, web: str, dashboard: str, settings: Settings) -> None:
        state = {
            "pid": os.getpid(),
            "web": web,
            "dashboard": dashboard,
            "redis_url": settings.redis_url,
            "database_url": settings.database_url,
            "manifest": str(self.manifest),
        }
        path = self.data / "state.json"
        _private_file(path)
        path.write_text(json.dumps(state, indent=2))

    def _spawn(self, settings: Settings, sockets: list[socket.socket]) -> Generation:
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_end)
            run_child(self.manifest, settings, sockets, write_end)
        os.close(write_end)
        return Generation(pid=pid, pipe=read_end)

    def _watch(self, watcher: RustNotify, settings: Settings, sockets: list[socket.socket]) -> None:
        while not self.stop_event.is_set():
            raw = watcher.watch(WATCH_DEBOUNCE_MS, WATCH_STEP_MS, WATCH_TIMEOUT_MS, self.stop_event)
            self._reap()
            if isinstance(raw, str):  # "timeout", or "stop" / "signal" (the stop event is set)
                continue
            paths = sorted({path for _, path in raw if is_source(path, self.root, self.manifest, self.sources)})
            if paths:
                self._reload(settings, sockets, paths)

    def _reload(self, settings: Settings, sockets: list[socket.socket], paths: list[str]) -> None:
        started = time.perf_counter()
        names = ", ".join(os.path.relpath(p, self.root) for p in paths)
        for path in paths:
            # A .pyc is checked against its source's size and mtime in whole seconds: two saves of the same
            # size within one second would otherwise import the first one's bytecode.
            if path.endswith(".py"):
                with contextlib.suppress(OSError, ValueError):
                    os.unlink(importlib.util.cache_from_source(path))
        fresh = self._spawn(settings, sockets)
        status, message = fresh.outcome()
        self.sources = set(json.loads(message)) if status == "ready" else None
        old, self.current = self.current, fresh
        if old is not None:
            old.stop()
            self.retiring.append(old)
        elapsed = (time.perf_counter() - started) * 1000
        if status == "ready":
            self.say(f"reloaded in {elapsed:.0f} ms ({names} changed)")
        else:
            self.say(
                f"error: reload failed ({names} changed); still up, serving the error "
                f"until the next good save:\n{message}"
            )

    def _reap(self) -> None:
        for generation in list(self.retiring):
            with contextlib.suppress(ChildProcessError):
                pid, _ = os.waitpid(generation.pid, os.WNOHANG)
                if pid == 0:
                    continue
            self.retiring.remove(generation)

    def _shutdown(self, settings: Settings) -> None:
        self.say("stopping…")
        generations = [g for g in [self.current, *self.retiring] if g is not None]
        for generation in generations:
            generation.stop()
        deadline = time.monotonic() + settings.shutdown_timeout + 5
        for generation in generations:
            while time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    pid, _ = os.waitpid(generation.pid, os.WNOHANG)
                    if pid == 0:
                        time.sleep(0.02)
                        continue
                break
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(generation.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(generation.pid, 0)
        self._stop_redis()
        self.say("stopped")

    def _stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.stop()

"""Sync task functions run in a warm pool of child processes, so a timeout really stops them.

A thread cannot be killed, so taskiq's timeout leaves a timed-out sync task running beside its retry.
Here each sync call runs in a long-lived child process; on timeout the child is killed (SIGKILL) and
reaped before the attempt counts as failed, so no retry ever runs beside a timed-out attempt, and a
replacement is started at once so the next task finds a warm child.

- A child dies with its worker: it asks the kernel for SIGKILL when its parent exits (Linux
  `PR_SET_PDEATHSIG`), before any other worker could reclaim its task.
- The timeout counts from the moment the child starts the function (it says "started"), not from the
  process's start-up or the handler's import; those are bounded separately, generously (`start_timeout`).
- The child imports this file alone (not the `runtime` package), then the handler modules it is told
  to preload, so its start-up costs only what the handlers need.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, NoReturn

logger = logging.getLogger("runtime.worker")

START_TIMEOUT = 60.0  # seconds a task waits for its child to be up and to start the function
_HEADER = struct.Struct("!I")  # each message: its length, then the pickled tuple

# Run by `python -P -c` in the child. It dies with the parent before doing anything else, then loads
# this file by path: importing `runtime.sync_pool` would import the whole runtime package first.
_BOOTSTRAP = """\
import os, sys
parent, fd, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if sys.platform == "linux":
    import ctypes
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: die when the worker dies
if os.getppid() != parent:  # the worker died before prctl took effect
    os._exit(1)
import importlib.util
spec = importlib.util.spec_from_file_location("runtime_sync_child", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.serve(parent, fd)
"""


class TaskError(Exception):
    """An exception raised by a sync task in its child process, carried back by type name and message."""

    def __init__(self, type_name: str, message: str, trace: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.trace = trace


class SyncProcessError(Exception):
    """The child process running a sync task died, or did not start the function in time."""


# --- the child ---------------------------------------------------------------------------------------


_SENDING = threading.Lock()  # a task's threads may log while the main thread replies


def _send(fd: int, data: bytes) -> None:
    view = memoryview(_HEADER.pack(len(data)) + data)
    with _SENDING:
        while view:
            view = view[os.write(fd, view) :]


class _ForwardLogs(logging.Handler):
    """In the child: each log record goes to the worker, which logs it as its own, in the context of the run
    (so it carries the run's fields, the worker's format and its redaction)."""

    _FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra = {k: v for k, v in vars(record).items() if k not in self._FIELDS}
            fields = {
                "name": record.name,
                "levelno": record.levelno,
                "levelname": record.levelname,
                "msg": record.getMessage(),
                "created": record.created,
                "msecs": record.msecs,
                "exc_text": self.format_exception(record),
            }
            try:
                data = pickle.dumps(("log", fields | extra))
            except Exception:
                data = pickle.dumps(("log", fields | {k: repr(v) for k, v in extra.items()}))
            _send(self.fd, data)
        except Exception:
            self.handleError(record)

    @staticmethod
    def format_exception(record: logging.LogRecord) -> str | None:
        if record.exc_info:
            return "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        return record.exc_text


def _receive(fd: int) -> bytes:
    def exactly(size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    (size,) = _HEADER.unpack(exactly(_HEADER.size))
    return exactly(size)


def _watch_parent(parent: int) -> None:
    """Where there is no parent-death signal, poll: exit as soon as the worker is gone."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def serve(parent: int, fd: int) -> None:
    """The child's loop: set up, preload, say "ready"; then for each (ref, kwargs) say "started" and reply
    ("ok", value) or ("err", type, message, traceback, seconds) (seconds: a RetryAfter's, else None)."""
    if sys.platform != "linux":
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the worker, which lets running tasks finish
    try:
        path, modules, level = pickle.loads(_receive(fd))
    except EOFError:  # the pool closed before this child was set up
        return
    sys.path[:] = path
    began = time.perf_counter()
    for module in modules:
        with contextlib.suppress(BaseException):  # the task that needs it reports the error
            importlib.import_module(module)
    _send(fd, pickle.dumps(("ready", time.perf_counter() - began)))
    root = logging.getLogger()
    root.handlers[:] = [_ForwardLogs(fd)]
    root.setLevel(level)
    while True:
        try:
            request = _receive(fd)
        except EOFError:
            return
        try:
            ref, kwargs = pickle.loads(request)
            module, attribute = ref.split(":")
            target = getattr(importlib.import_module(module), attribute)
            target = getattr(target, "fn", target)
            _send(fd, pickle.dumps(("started",)))
            reply = pickle.dumps(("ok", target(**kwargs)), pickle.HIGHEST_PROTOCOL)  # unpicklable: an error
        except BaseException as exc:
            seconds = getattr(exc, "seconds", None) if type(exc).__name__ == "RetryAfter" else None
            reply = pickle.dumps(("err", type(exc).__name__, str(exc), traceback.format_exc(), seconds))
        _send(fd, reply)


# --- the worker's side -------------------------------------------------------------------------------


class _Child:
    """One child process and its socket; `ready` finishes once it has preloaded the handler modules."""

    def __init__(self, modules: list[str], start_timeout: float) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            # started from the event loop's thread, which lives as long as the worker (the parent-death
            # signal fires when the thread that started the child ends)
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-c", _BOOTSTRAP, str(os.getpid()), str(theirs.fileno()), __file__],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        self.socket = ours
        self.writer: asyncio.StreamWriter | None = None
        self.spawned = time.perf_counter()
        self.ready = asyncio.ensure_future(self._start(list(sys.path), modules, start_timeout))

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _start(self, path: list[str], modules: list[str], timeout: float) -> float:
        try:
            async with asyncio.timeout(timeout):
                self.reader, self.writer = await asyncio.open_unix_connection(sock=self.socket)
                await self.send((path, modules, logging.getLogger().getEffectiveLevel()))
                kind, preload = await self.receive()
        except TimeoutError:
            raise SyncProcessError(f"sync process {self.pid} did not start within {timeout:g}s") from None
        assert kind == "ready", kind
        logger.debug(
            "sync process %d ready in %.0f ms (%.0f ms preloading %s)",
            self.pid,
            (time.perf_counter() - self.spawned) * 1000,
            preload * 1000,
            ", ".join(modules) or "nothing",
        )
        return float(preload)

    async def send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        assert self.writer is not None
        try:
            self.writer.write(_HEADER.pack(len(data)) + data)
            await self.writer.drain()
        except ConnectionError:
            await self._died()

    async def receive(self) -> tuple[Any, ...]:
        """The child's next message; the lines it logs meanwhile are logged here, as the worker's own."""
        while True:
            try:
                (size,) = _HEADER.unpack(await self.reader.readexactly(_HEADER.size))
                message: tuple[Any, ...] = pickle.loads(await self.reader.readexactly(size))
            except (asyncio.IncompleteReadError, ConnectionError):
                await self._died()
            if message[0] != "log":
                return message
            record = logging.makeLogRecord(message[1])
            target = logging.getLogger(record.name)
            if target.isEnabledFor(record.levelno):
                target.handle(record)

    async def _died(self) -> NoReturn:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()  # in case it only closed its end
        await self.reap()
        raise SyncProcessError(f"the sync task's process {self.pid} exited (code {self.process.returncode})")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def is_ready(self) -> bool:
        return self.ready.done() and not self.ready.cancelled() and self.ready.exception() is None

    def kill(self) -> None:
        self.ready.cancel()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        # through its transport, which unregisters the socket from the event loop before a new one reuses
        # its number; if the transport is still being made, once the cancelled start has unwound
        if self.writer is not None:
            self.writer.close()
        else:
            self.ready.add_done_callback(lambda _: self.socket.close())

    async def reap(self) -> None:
        """Wait until the process has exited (after `kill`, a few milliseconds)."""
        while self.process.poll() is None:
            await asyncio.sleep(0.005)


class SyncPool:
    """Runs sync functions in `size` warm child processes (one per task the worker runs at once)."""

    def __init__(self, size: int, start_timeout: float = START_TIMEOUT) -> None:
        self.size = size
        self.start_timeout = start_timeout
        self._modules: list[str] = []  # handler modules every new child preloads
        self._idle: list[_Child] = []  # oldest first: the first ready one is taken
        self._busy: set[_Child] = set()
        self._slots = asyncio.Semaphore(size)
        self._warming: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def children(self) -> list[_Child]:
        return [*self._idle, *self._busy]

    def warm(self, refs: list[str] | None = None, after: float = 0.0) -> None:
        """Fill the pool in the background, one child after another, each preloading the modules of `refs`
        (handler references, "module:attribute"), starting `after` seconds from now."""
        self._learn(refs or [])
        if self._warming is None or self._warming.done():
            self._warming = asyncio.ensure_future(self._fill(after))

    async def _fill(self, after: float = 0.0) -> None:
        if after:
            await asyncio.sleep(after)
        # one at a time: the first child is ready sooner than if all of them shared the CPU
        while not self._closed and len(self.children) < self.size:
            child = self._spawn()
            await asyncio.wait([child.ready])  # however it ends: started, failed, or killed
            if not child.is_ready:
                return  # no start-up loop: the next task starts a child of its own

    def _learn(self, refs: list[str]) -> None:
        for ref in refs:
            module = ref.partition(":")[0]
            if module not in self._modules:
                self._modules.append(module)

    def _spawn(self) -> _Child:
        child = _Child(list(self._modules), self.start_timeout)
        child.ready.add_done_callback(lambda _: self._check_started(child))
        self._idle.append(child)
        return child

    def _check_started(self, child: _Child) -> None:
        """An idle child that failed to start leaves the pool (the next task starts another)."""
        if not child.ready.cancelled() and child.ready.exception() is not None and child in self._idle:
            logger.warning("sync process %d failed to start: %s", child.pid, child.ready.exception())
            self._idle.remove(child)
            child.kill()

    def _take(self) -> _Child:
        for dead in [c for c in self._idle if not c.alive]:  # e.g. killed by the OOM killer while idle
            self._idle.remove(dead)
            dead.kill()
        ready = [c for c in self._idle if c.is_ready]
        child = ready[0] if ready else self._idle[0] if self._idle else self._spawn()
        self._idle.remove(child)
        self._busy.add(child)
        return child

    async def run(self, ref: str, kwargs: dict[str, Any], timeout: float) -> Any:
        """Run `ref(**kwargs)` in a child; TimeoutError if it runs longer than `timeout` seconds once started."""
        async with self._slots:
            child = self._take()
            try:
                try:
                    async with asyncio.timeout(self.start_timeout):
                        await child.ready
                        await child.send((ref, kwargs))
                        reply = await child.receive()
                except TimeoutError:
                    raise SyncProcessError(
                        f"the process for sync task {ref} did not start it within {self.start_timeout:g}s"
                    ) from None
                if reply[0] == "started":
                    async with asyncio.timeout(timeout):
                        reply = await child.receive()
            except BaseException:
                # timed out, cancelled, or the child died: it is killed and reaped before we go on
                self._busy.discard(child)
                child.kill()
                if not self._closed:
                    self.warm()  # a replacement, so the next task finds a warm child
                await child.reap()
                raise
            self._busy.discard(child)
            self._idle.append(child)
        if reply[0] == "ok":
            return reply[1]
        _, type_name, message, trace, seconds = reply
        if type_name == "SkipRetry":
            from runtime.errors import SkipRetry  # here: the child loads this file without the runtime package

            raise SkipRetry(message)
        if type_name == "RetryAfter" and isinstance(seconds, float):
            from runtime.errors import RetryAfter

            raise RetryAfter(seconds)
        raise TaskError(type_name, message, trace)

    def close(self) -> None:
        self._closed = True
        if self._warming is not None:
            self._warming.cancel()
        children = self.children
        for child in children:
            child.kill()
        for child in children:
            child.process.wait()
        self._idle.clear()
        self._busy.clear()

"""Sync task functions run in a pool of child processes, so a timeout really stops them.

A thread cannot be killed, so taskiq's timeout leaves a timed-out sync task running beside its retry.
Here each sync call runs in a long-lived child process; on timeout the child is killed (SIGKILL) and
reaped before the attempt counts as failed, so no retry ever runs beside a timed-out attempt. The
child imports the handler by reference, so it runs the same code as the worker.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from runtime.errors import SkipRetry


class TaskError(Exception):
    """An exception raised by a sync task in its child process, carried back by type name and message."""

    def __init__(self, type_name: str, message: str, trace: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.trace = trace


def _serve(conn: Connection, path: list[str]) -> None:
    """The child's loop: receive (handler ref, kwargs), reply ("ok", value) or ("err", type, msg, tb)."""
    sys.path[:0] = [p for p in path if p not in sys.path]
    while True:
        try:
            ref, kwargs = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        try:
            module, attribute = ref.split(":")
            target = getattr(importlib.import_module(module), attribute)
            target = getattr(target, "fn", target)
            conn.send(("ok", target(**kwargs)))
        except BaseException as exc:
            conn.send(("err", type(exc).__name__, str(exc), traceback.format_exc()))


class _Child:
    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_serve, args=(child_conn, list(sys.path)), daemon=True, name="runtime-sync-task"
        )
        self.process.start()
        child_conn.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class SyncPool:
    """Runs sync functions in up to `size` child processes, started on first use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._slots = asyncio.Semaphore(size)
        self._threads = ThreadPoolExecutor(max_workers=2 * size + 1, thread_name_prefix="sync-pool")

    def warm(self) -> None:
        """Start one child process in the background, ahead of the first sync task."""
        loop = asyncio.get_running_loop()

        def started(future: asyncio.Future[_Child]) -> None:
            if not future.cancelled() and future.exception() is None:
                self._idle.append(future.result())

        loop.run_in_executor(self._threads, _Child).add_done_callback(started)

    async def run(self, ref: str, kwargs: dict[str, Any], timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        async with self._slots:
            child = self._idle.pop() if self._idle else await loop.run_in_executor(self._threads, _Child)
            self._busy.add(child)
            try:
                child.conn.send((ref, kwargs))
                reply = await asyncio.wait_for(loop.run_in_executor(self._threads, child.conn.recv), timeout)
            except BaseException:
                # timed out, cancelled, or the child died: it is killed and reaped before we go on
                self._busy.discard(child)
                await loop.run_in_executor(self._threads, child.kill)
                raise
            self._busy.discard(child)
            self._idle.append(child)
        if reply[0] == "ok":
            return reply[1]
        _, type_name, message, trace = reply
        if type_name == "SkipRetry":
            raise SkipRetry(message)
        raise TaskError(type_name, message, trace)

    def close(self) -> None:
        for child in [*self._idle, *self._busy]:
            child.kill()
        self._idle.clear()
        self._busy.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)

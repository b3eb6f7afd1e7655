"""The runtime running in this process, if any: one small module both the decorators (which enqueue
through it) and the connections (which start it) import, so neither imports the other for it."""

from __future__ import annotations

from typing import Any

_running: Any = None  # the Runtime (typed Any: this module must not import it)


def running() -> Any:
    return _running


def set_running(runtime: Any) -> None:
    global _running
    _running = runtime


def clear_running(runtime: Any) -> None:
    global _running
    if _running is runtime:
        _running = None

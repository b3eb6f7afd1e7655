"""The cyclic garbage collector stays off while a long-running process starts.

Start-up imports and builds tens of thousands of objects that live as long as the process, and each
collection during it walks them all again: in a py-spy profile of `runtime worker` start-up, one
sample in five was in the collector. So a process pauses the collector when it starts and, once it is
ready, freezes what start-up built (kept out of every later collection, and not copied by a fork's
writes) and turns the collector back on. A bulk enqueue pauses it while it builds its batch (`building`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

GRACE = 5.0  # seconds after which the collector comes back on even if no part of the process said ready


def pause() -> None:
    gc.disable()


def resume() -> None:
    """Start-up is over: freeze what it built and collect again. Idempotent."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


BULK = 64  # items from which building a batch pauses the collector


@contextlib.contextmanager
def building(items: int) -> Iterator[None]:
    """Pause the collector while a batch of `items` (at least BULK) is built, with no await inside. Each item makes
    several new containers (its arguments, its record, its bound values) that all live until the batch is written,
    so the collector's generations fill with survivors and a bulk of thousands pays for full collections of the
    whole heap (in a process that did not freeze its start-up, the app's and its libraries' objects too): ~4% of a
    bulk enqueue's time (enqueue_many of 1,000, alternating rounds). The collection comes after, once. Nothing
    changes if the collector is off already."""
    if items < BULK or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()

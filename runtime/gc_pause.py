"""The cyclic garbage collector stays off while a long-running process starts.

Start-up imports and builds tens of thousands of objects that live as long as the process, and each
collection during it walks them all again: in a py-spy profile of `runtime worker` start-up, one
sample in five was in the collector. So a process pauses the collector when it starts and, once it is
ready, freezes what start-up built (kept out of every later collection, and not copied by a fork's
writes) and turns the collector back on.
"""

from __future__ import annotations

import gc

GRACE = 5.0  # seconds after which the collector comes back on even if no part of the process said ready


def pause() -> None:
    gc.disable()


def resume() -> None:
    """Start-up is over: freeze what it built and collect again. Idempotent."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()

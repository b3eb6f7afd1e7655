"""Queue priority: which of a worker's queues to read first, now.

Weighted (Asynq's way): a random order where each queue's chance to come first is proportional to its
weight, so under a backlog in every queue a worker's starts follow the weights. Strict: heaviest first,
always, so a lighter queue is served only when every heavier one is empty. Paused queues are left out
(read every second; a task read just before its queue was paused is stopped at its start, see broker's _START).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from runtime.errors import ConfigError

PAUSED_CHECK = 1.0  # seconds a worker trusts what it last read of the paused flags


def served_queues(manifest: Any, queues: list[str] | None) -> list[str]:
    """The queues a worker serves: those given (`--queues`), all declared ones by default; ConfigError for one the
    manifest does not declare."""
    declared = list(manifest.queue_names())
    unknown = [q for q in queues or [] if q not in declared]
    if unknown:
        raise ConfigError(
            f"--queues names {', '.join(unknown)}, not declared in the manifest; its queues: {', '.join(declared)}"
        )
    return list(queues or declared)


class QueueOrder:
    def __init__(
        self,
        queues: list[str],
        weights: dict[str, int],
        strict: bool,
        read_paused: Callable[[], Awaitable[set[str]]],
    ) -> None:
        self.queues = queues
        self.weights = weights
        self.strict = strict
        self.read_paused = read_paused
        self.paused: set[str] = set()
        self.checked = 0.0

    def refresh(self) -> None:
        """Re-read the paused flags on the next `now()` (a queue was found paused)."""
        self.checked = 0.0

    async def now(self) -> list[str]:
        """The unpaused queues, in the order to try them now."""
        if time.monotonic() >= self.checked:
            self.paused = await self.read_paused()
            self.checked = time.monotonic() + PAUSED_CHECK
        queues = [q for q in self.queues if q not in self.paused]
        if self.strict:
            return sorted(queues, key=lambda q: -self.weights.get(q, 1))
        order, left = [], list(queues)
        while left:
            pick = random.choices(left, weights=[self.weights.get(q, 1) for q in left])[0]
            order.append(pick)
            left.remove(pick)
        return order

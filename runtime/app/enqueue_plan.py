"""What every enqueue of a task reads from the manifest, read once per task (runtime/app/connections.py)."""

from __future__ import annotations

from typing import NamedTuple

from runtime.app.manifest import Manifest, TaskSpec


class Plan(NamedTuple):
    """A task's queue, attempts, `unique` window and flow control (None: none applies)."""

    name: str
    queue: str
    max_attempts: int
    unique: float | None
    flow: TaskSpec | None


def plan_of(manifest: Manifest, name: str) -> Plan:
    spec = manifest.functions[name].task
    flow = spec if spec is not None and spec.flow() else None
    return Plan(name, manifest.queue(name), manifest.retries(name) + 1, manifest.unique(name), flow)

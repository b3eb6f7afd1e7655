"""Flow control at enqueue (Inngest's order: rate limits and batches at enqueue, debounce when scheduling; throttle
and concurrency at start, in the worker): every keyed limit's value is checked here, so a run whose key is missing
fails its enqueue with a clear error instead of getting stuck."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from runtime.app.manifest import TaskSpec
from runtime.errors import ArgumentsError
from runtime.flow.batch import Batcher
from runtime.flow.debounce import Debouncer
from runtime.flow.paths import key_value
from runtime.flow.state import count

# `runtime` below is runtime/app/connections.py's Runtime, which imports this module (so typed Any here)


def keyed(spec: TaskSpec) -> list[tuple[str, str | None]]:
    """(setting, key path) of each limit of a task that reads a key from the arguments."""
    out: list[tuple[str, str | None]] = [(f"concurrency[{i}].key", c.key) for i, c in enumerate(spec.concurrency or [])]
    for name in ("throttle", "rate_limit", "debounce", "batch"):
        limit = getattr(spec, name)
        if limit is not None:
            out.append((f"{name}.key", limit.key))
    return out


def key_arguments(spec: TaskSpec, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """What keys are read from: the arguments, or for a batch task each of its items (a batch run: its first)."""
    if spec.batch is None:
        return [arguments]
    [items] = arguments.values() if len(arguments) == 1 else [[]]
    return [{"item": item} if not isinstance(item, dict) else item for item in items or []]


def check_keys(spec: TaskSpec, rows: list[dict[str, Any]]) -> None:
    """Raise ArgumentsError for a run (or a batch item) whose key value is missing or not a string or number."""
    for row in rows:
        for arguments in key_arguments(spec, row["arguments"]):
            for where, path in keyed(spec):
                key_value(arguments, path, where)


async def submit_flow(
    runtime: Any, name: str, spec: TaskSpec, rows: list[dict[str, Any]], messages: list[bytes], seconds: float
) -> list[dict[str, Any]] | None:
    """Enqueue runs of a task with flow control: their records as enqueued, or None when only start-time limits
    (concurrency, throttle) apply and the runs are queued as any other."""
    check_keys(spec, rows)
    return await _gathered(runtime, name, spec, rows, messages, seconds)


async def _gathered(
    runtime: Any, name: str, spec: TaskSpec, rows: list[dict[str, Any]], messages: list[bytes], seconds: float
) -> list[dict[str, Any]] | None:
    """Debounce and batches (runtime/flow/debounce.py, batch.py): enqueues gathered into fewer runs, which
    start when the gathering says (so `delay`, `at` and a unique `key` do not apply to them), or None for other
    tasks."""
    gathering = "debounce" if spec.debounce is not None else "batch" if spec.batch is not None else None
    if gathering is None:
        return None
    if seconds:
        raise ArgumentsError(f"{name}: `delay` and `at` do not apply to a task with `{gathering}`: it decides when")
    if any(row["idempotency_key"] is not None for row in rows):
        raise ArgumentsError(f"{name}: `key` does not apply to a task with `{gathering}`: its own key gathers runs")
    per_key: Counter[str] = Counter()
    if spec.debounce is not None:
        debounce = spec.debounce
        out = await Debouncer(runtime).submit(name, debounce.period, debounce.key, debounce.timeout, rows, messages)
        for row, joined in zip(rows, out, strict=True):
            per_key[key_value(row["arguments"], debounce.key)] += joined["id"] != row["id"]
        what = "debounced"
    else:
        assert spec.batch is not None
        batch = spec.batch
        out = await Batcher(runtime).submit(name, batch.size, batch.timeout, batch.key, rows, messages)
        for row in rows:
            for item in key_arguments(spec, row["arguments"]):
                per_key[key_value(item, batch.key)] += 1
        what = "batched"
    with contextlib.suppress(Exception):  # counted for `runtime limits`; the enqueue is done either way
        await count(runtime.broker.redis, runtime.keys, name, what, {k: n for k, n in per_key.items() if n})
    return out

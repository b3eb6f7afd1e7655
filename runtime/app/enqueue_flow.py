"""Flow control at enqueue (Inngest's order: rate limits and batches at enqueue, debounce when scheduling; throttle
and concurrency at start, in the worker): every keyed limit's value is checked here, so a run whose key is missing
fails its enqueue with a clear error instead of getting stuck."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.app.durations import format_duration
from runtime.app.manifest import TaskSpec
from runtime.errors import ArgumentsError
from runtime.flow.batch import Batcher
from runtime.flow.debounce import Debouncer
from runtime.flow.paths import batch_items, key_value
from runtime.flow.rate_limit import count_skipped
from runtime.flow.state import count
from runtime.store.values import utcnow

logger = logging.getLogger("runtime.enqueue")

# `runtime` below is runtime/app/connections.py's Runtime, which imports this module (so typed Any here)


def keyed(spec: TaskSpec) -> list[tuple[str, str | None]]:
    """(setting, key path) of each limit of a task that reads a key from the arguments."""
    out: list[tuple[str, str | None]] = [(f"concurrency[{i}].key", c.key) for i, c in enumerate(spec.concurrency or [])]
    for name in ("throttle", "rate_limit", "debounce", "batch"):
        limit = getattr(spec, name)
        if limit is not None:
            out.append((f"{name}.key", limit.key))
    return out


def key_arguments(spec: TaskSpec, arguments: dict[str, Any]) -> list[Mapping[str, Any]]:
    """What keys are read from: the arguments, or for a batch task each of its items (a batch run: its first)."""
    return [arguments] if spec.batch is None else batch_items(arguments)


def check_keys(spec: TaskSpec, rows: list[dict[str, Any]]) -> None:
    """Raise ArgumentsError for a run (or a batch item) whose key value is missing or not a string or number."""
    for row in rows:
        for arguments in key_arguments(spec, row["arguments"]):
            for where, path in keyed(spec):
                key_value(arguments, path, where)


@dataclass
class Flowed:
    """What flow control left of an enqueue: the runs still to queue the normal way (their rows, messages and
    places in the enqueue), and the records of the runs it settled itself (e.g. skipped), by place."""

    rows: list[dict[str, Any]]
    messages: list[bytes]
    places: list[int]
    settled: dict[int, dict[str, Any]] = field(default_factory=dict)

    def merged(self, queued: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every run's record in the order of the enqueue: the settled ones and those `queued` returned."""
        by_place = self.settled | dict(zip(self.places, queued, strict=False))
        return [by_place[place] for place in sorted(by_place)]


async def submit_flow(
    runtime: Any, name: str, spec: TaskSpec, rows: list[dict[str, Any]], messages: list[bytes], seconds: float
) -> Flowed | None:
    """Apply a task's enqueue-time flow control: what is left to queue the normal way and what it settled, or
    None when only start-time limits (concurrency, throttle) apply and the runs are queued as any other."""
    check_keys(spec, rows)
    flowed = None
    if spec.rate_limit is not None:  # first: a run over the rate limit is neither debounced nor batched
        flowed = await skip_over_rate_limit(runtime, name, spec, rows, messages)
    if spec.debounce is None and spec.batch is None:
        return flowed
    if flowed is None:
        flowed = Flowed(rows, messages, list(range(len(rows))))
    if flowed.rows:
        gathered = await _gathered(runtime, name, spec, flowed.rows, flowed.messages, seconds)
        assert gathered is not None  # the task has a debounce or a batch
        flowed.settled |= dict(zip(flowed.places, gathered, strict=True))
    flowed.rows, flowed.messages, flowed.places = [], [], []  # all settled: gathered runs are queued by now
    return flowed


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


# --- rate limits (runtime/flow/rate_limit.py) -------------------------------------------------------------


async def skip_over_rate_limit(
    runtime: Any, name: str, spec: TaskSpec, rows: list[dict[str, Any]], messages: list[bytes]
) -> Flowed | None:
    """Ask the rate limit about every run; those over it are recorded `skipped` (final, never sent to Redis),
    with the reason in `last_error`. None when all may run."""
    limit = spec.rate_limit
    assert limit is not None
    values = [key_value((key_arguments(spec, row["arguments"]) or [{}])[0], limit.key) for row in rows]
    logs = [runtime.keys.rate(name, value) for value in values]
    allowed = await runtime.rate_limiter.admit(name, logs, [row["id"] for row in rows], limit.limit, limit.period)
    if all(allowed):
        return None
    flowed = Flowed([], [], [])
    finished = utcnow()
    for place, (row, message, value, ok) in enumerate(zip(rows, messages, values, allowed, strict=True)):
        if ok:
            flowed.rows.append(row)
            flowed.messages.append(message)
            flowed.places.append(place)
            continue
        per = f"{limit.key}={value}" if limit.key is not None else f"function {name}"
        reason = f"rate limit: {limit.limit} per {format_duration(limit.period)} for {per}"
        flowed.settled[place] = row | {
            "status": "skipped",
            "finished_at": finished,
            "last_error": reason,
            "error_type": "RateLimited",
        }
    skipped = list(flowed.settled.values())
    try:
        await runtime.records.insert(skipped)
    except Exception as exc:  # skipped either way (nothing of theirs is in Redis): only the record is missing
        logger.warning("could not save the records of %d skipped run(s) of %s: %s", len(skipped), name, exc)
    count_skipped(name, rows[0]["queue"], len(skipped))
    per_key = Counter(value for value, ok in zip(values, allowed, strict=True) if not ok)
    with contextlib.suppress(Exception):  # counted for `runtime limits`; the runs are skipped either way
        await count(runtime.broker.redis, runtime.keys, name, "skipped", dict(per_key))
    return flowed

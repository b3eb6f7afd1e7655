"""What flow control holds now, per function, limit and key, read from Redis: for `runtime limits`, the dashboard
and /metrics. Keys with nothing running or waiting are not listed; a function whose limits hold nothing shows one
row without a key, so every declared limit is seen."""

from __future__ import annotations

import math
import time
from typing import Any

from redis.asyncio import Redis

from runtime.flow.gate import Slot, StartLimits, Throttle, start_limits
from runtime.queue.keys import Keys

MAX_KEYS = 200  # keys listed per limit (the busiest); the rest are summed under "(other)"
COUNTED = ("skipped", "debounced", "batched")  # per key counters of what acted at enqueue (`counts:<function>`)


async def _scan(redis: Redis, pattern: str) -> list[str]:
    found = []
    async for key in redis.scan_iter(match=pattern, count=1000):
        found.append(key.decode() if isinstance(key, bytes) else str(key))
    return found


def _row(function: str, limit: str, key: str | None, **counts: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"function": function, "limit": limit, "key": key, "running": 0, "max": None}
    row |= {"waiting": 0, "throttled": 0} | dict.fromkeys(COUNTED, 0)
    return row | counts


async def limit_rows(
    redis: Redis, keys: Keys, limits: dict[str, StartLimits], enqueue_limits: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """One row per function, limit and key: running (holding a slot) of `max`, waiting for a slot, throttled (waiting
    for their turn), and the counts of what acted at enqueue (skipped by a rate limit, debounced, batched) over the
    last day. `enqueue_limits`: function -> the enqueue-time limits it declares (rate_limit, debounce, batch)."""
    now_ms = int(time.time() * 1000)
    rows: list[dict[str, Any]] = []
    named_done: set[str] = set()
    for function, spec in sorted(limits.items()):
        for slot in spec.slots:
            if slot.name not in named_done:
                rows += await _slot_rows(redis, keys, function, slot, now_ms)
            if slot.name.startswith("@"):
                named_done.add(slot.name)
        if spec.throttle is not None:
            rows += await _throttle_rows(redis, keys, function, spec.throttle, now_ms)
    for function, kinds in sorted(enqueue_limits.items()):
        counts = await redis.hgetall(keys.flow(f"counts:{function}"))
        per_key: dict[str | None, dict[str, int]] = {}
        for field, value in counts.items():
            text = field.decode() if isinstance(field, bytes) else str(field)
            what, _, key = text.partition("\n")
            if what in COUNTED:
                per_key.setdefault(key or None, {})[what] = int(value)
        label = ", ".join(kinds)
        rows += _top([_row(function, label, key, **c) for key, c in per_key.items()]) or [_row(function, label, None)]
    return rows


async def _slot_rows(redis: Redis, keys: Keys, function: str, slot: Slot, now_ms: int) -> list[dict[str, Any]]:
    """A concurrency limit's keys holding or waiting for a slot (a named limit: one row, its functions' `*`)."""
    named = slot.name.startswith("@")
    label = slot.name[1:] if named else f"concurrency {slot.key or '(function)'}"
    owner = "*" if named else function
    suffixes: set[str] = set()
    for kind in ("running", "waiting"):
        prefix = keys.flow(f"{kind}:")
        pattern = keys.flow(f"{kind}:{slot.name}") if named else keys.flow(f"{kind}:{slot.name}:*")
        suffixes |= {key[len(prefix) :] for key in await _scan(redis, pattern)}
    rows = []
    for suffix in sorted(suffixes):
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zcount(keys.flow(f"running:{suffix}"), now_ms, "+inf")
            pipe.llen(keys.flow(f"waiting:{suffix}"))
            running, waiting = await pipe.execute()
        key = None if named else suffix[len(slot.name) + 1 :]
        rows.append(_row(owner, label, key, running=running, max=slot.limit, waiting=waiting))
    return _top(rows) or [_row(owner, label, None, max=slot.limit)]


async def _throttle_rows(
    redis: Redis, keys: Keys, function: str, throttle: Throttle, now_ms: int
) -> list[dict[str, Any]]:
    """A throttle's keys with runs waiting for their turn: how many turns are reserved ahead of now."""
    label = f"throttle {throttle.key or '(function)'}"
    prefix = keys.flow(f"throttle:{function}:")
    rows = []
    for tat_key in await _scan(redis, prefix + "*"):
        tat = float(await redis.get(tat_key) or 0)
        # turns are reserved at tat - k x interval - tolerance (k = 1, 2, ...); those after now wait for theirs
        ahead = math.ceil((tat - now_ms - throttle.tolerance * 1000) / (throttle.interval * 1000)) - 1
        rows.append(_row(function, label, tat_key[len(prefix) :] or None, throttled=max(0, ahead)))
    return _top(rows) or [_row(function, label, None)]


def _top(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The busiest MAX_KEYS rows; the rest summed in one row keyed "(other)"."""

    def load(row: dict[str, Any]) -> int:
        return int(row["running"]) + int(row["waiting"]) + int(row["throttled"]) + sum(int(row[c]) for c in COUNTED)

    rows.sort(key=lambda row: (-load(row), str(row["key"])))
    if len(rows) <= MAX_KEYS:
        return rows
    rest = rows[MAX_KEYS:]
    other = dict(rest[0]) | {"key": "(other)"}
    for field in ("running", "waiting", "throttled", *COUNTED):
        other[field] = sum(int(row[field]) for row in rest)
    return [*rows[:MAX_KEYS], other]


async def limits_now(runtime: Any) -> list[dict[str, Any]]:
    """`limit_rows` for a runtime's app (runtime/app/connections.py's Runtime)."""
    manifest = runtime.app.manifest
    enqueue_limits = {}
    for name, fn in manifest.tasks().items():
        kinds = [kind for kind in ("rate_limit", "debounce", "batch") if getattr(fn.task, kind) is not None]
        if kinds:
            enqueue_limits[name] = kinds
    return await limit_rows(runtime.broker.redis, runtime.keys, start_limits(manifest), enqueue_limits)


async def count(redis: Redis, keys: Keys, function: str, what: str, per_key: dict[str, int]) -> None:
    """Add to what acted at enqueue (`what`: skipped, debounced or batched) per key value, kept for a day after the
    last; for `runtime limits`, the dashboard and /metrics. Best effort: the enqueue has happened either way."""
    if not per_key:
        return
    name = keys.flow(f"counts:{function}")
    async with redis.pipeline(transaction=False) as pipe:
        for key, amount in per_key.items():
            pipe.hincrby(name, f"{what}\n{key}", amount)
        pipe.expire(name, 86400)
        await pipe.execute()

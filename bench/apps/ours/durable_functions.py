"""The durable-functions benchmark's functions (bench/durable.py), written as a user writes them.

`steps` does its work in ten no-op steps; `unit` is one of those steps' bodies as a plain task. `sleeper` and
`waiter` stamp, after their sleep or wait, how late they resumed; the harness reads the stamps from Redis.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from bench.apps import probe
from runtime import Context, task

STEPS = 10  # steps per `steps` run
RUNS = "durable:runs"  # INCR by each `steps` run after its last step
# lists of "a b": seconds from the planned wake-up (from the event's send) to the resumed execution's first
# line (a), and to the line past the sleep (the wait) (b)
SLEEP_LATE = "durable:sleep_late"
EVENT_LATENCY = "durable:event_latency"
EVENT = "bench.go"


@task
async def steps(ctx: Context) -> None:
    for _ in range(STEPS):
        await ctx.step.run("unit", probe.record_done)  # unit, unit#2, ... unit#10
    await probe.client().incr(RUNS)


@task
async def unit() -> None:
    await probe.record_done()


@task
async def sleeper(ctx: Context, wake_at: float) -> None:
    started = time.time()  # on every execution: the code before a sleep runs again when the run resumes
    await ctx.sleep_until("nap", datetime.fromtimestamp(wake_at, UTC))
    resumed = time.time()
    await probe.client().rpush(SLEEP_LATE, f"{started - wake_at!r} {resumed - wake_at!r}")


@task
async def waiter(ctx: Context, i: int) -> None:
    started = time.time()
    data = await ctx.wait_for_event("go", event=EVENT, match="i", timeout=300)
    resumed = time.time()
    sent = data["sent_at"]
    await probe.client().rpush(EVENT_LATENCY, f"{started - sent!r} {resumed - sent!r}")

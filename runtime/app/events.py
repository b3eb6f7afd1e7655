"""Sending an event: `await send_event(name, data, id=...)`, `runtime events send` and `POST /api/events`.

An event starts one run of each task declared `task: {on: [name]}` (its data are the run's arguments; data that
do not fit make a failed run that says why), and ends the waits of runs that wait for it
(`ctx.wait_for_event`). An event with an `id` sent in the last EVENT_DEDUPE_SECONDS (24 h) is ignored; the id
counts as sent once its runs are queued and its waiters woken, so a send that failed half-way can be sent again:
each run it starts is queued at most once (a guard key), however often it is sent, and the waiters it claimed
are woken again. The same id sent after the window is a new event: its runs are new runs (their ids follow from
the id and its window's stamp), and the old ones are left as they are.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from runtime.app.current import running
from runtime.durable.events import Events, check_event
from runtime.errors import ArgumentsError, RuntimeNotStarted
from runtime.store.values import utcnow

# KEYS: the queue's delayed set, its stream. ARGV: the waiting run's message, now, 'again' or ''. A waiting run whose
# message is in the delayed set goes onto the stream at once; one whose suspend is not acked yet is made due now
# (the ack's ZADD LT keeps it early), and a worker moves it within a quarter second. Woken `again` (a waiter an
# earlier send claimed), only a message still in the delayed set moves: one no longer there may have run already.
_WAKE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'data', ARGV[1])
  return 1
end
if ARGV[3] == 'again' then return 0 end
redis.call('ZADD', KEYS[1], 'LT', ARGV[2], ARGV[1])
return 0
"""


async def send_event(name: str, data: dict[str, Any] | None = None, *, id: str | None = None) -> dict[str, Any]:
    """Send an event to the app running in this process; returns its id and the runs it started and woke."""
    runtime = running()
    if runtime is None:
        raise RuntimeNotStarted(
            "cannot send an event: no runtime is running in this process; "
            "use `async with Runtime.from_manifest('manifest.yaml'):` in scripts"
        )
    return await deliver(runtime, name, {} if data is None else data, id)


# `runtime` below is runtime/app/connections.py's Runtime, which imports this module through app/parents.py
# (a cancelled child tells its parent), so typed Any here
async def deliver(runtime: Any, name: str, data: Any, event_id: str | None) -> dict[str, Any]:
    """Check the event, then start its runs and end its waits; a bad event is an ArgumentsError, sending nothing."""
    text = check_event(name, data, event_id, runtime.settings.max_arguments_size)
    events = Events(runtime.broker.redis, runtime.keys)
    key = event_id or uuid.uuid4().hex
    stamp = ""
    if event_id is not None:
        sent, stamp = await events.delivery(event_id, runtime.settings.event_dedupe_seconds)
        if sent:
            return {"id": key, "name": name, "duplicate": True, "started": [], "woke": []}
    listeners = runtime.app.manifest.listeners(name)
    started = [await _start(runtime, function, name, data, key, stamp) for function in listeners]
    woke = []
    wake = runtime.broker.redis.register_script(_WAKE)
    claimed = [] if event_id is None else [(w, "again") for w in await events.waking(event_id)]
    seen_for = runtime.settings.event_dedupe_seconds
    claimed += [(w, "") for w in await events.claim(name, text, event_id, seen_for)]
    for waiter, how in claimed:
        queue = runtime.keys.queue(waiter["queue"])
        await wake(keys=[queue.delayed, queue.stream], args=[waiter["message"], time.time(), how])
        woke.append(waiter["run_id"])
    await events.log(name, text, key, started, woke)
    if event_id is not None:
        await events.sent(event_id, stamp)
    return {"id": key, "name": name, "duplicate": False, "started": started, "woke": woke}


async def _start(runtime: Any, function: str, name: str, data: dict[str, Any], event_id: str, stamp: str) -> str:
    """Start a run of `function` for the event: its id follows from the event's id and its window's `stamp`
    ('' for an event without id), and with an id it is queued at most once (a guard key for the window)."""
    run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{runtime.app.name}/{event_id}/{function}/{stamp}").hex
    fn = runtime.app.tasks[function]
    options: dict[str, Any] = {}
    if stamp:
        guard = runtime.keys.queue(runtime.queue_of(fn)).fire_guard(f"event:{run_id}", 0)
        options = {"guard": guard, "guard_seconds": runtime.settings.event_dedupe_seconds}
    try:
        await runtime.submit(fn, [data], run_ids=[run_id], **options)
    except ArgumentsError as exc:  # the run is there, failed, and says why
        from runtime.store.models import Run  # the SQLModel classes: only for a run that fails here

        now = utcnow()
        failed = Run(
            id=run_id,
            function=function,
            arguments=data,
            status="failed",
            queue=runtime.queue_of(fn),
            last_error=f"event {name} ({event_id}) does not fit: {exc}",
            error_type="ArgumentsError",
            enqueued_at=now,
            finished_at=now,
            version=int(time.time() * 1000) * 10 + 2,
        )
        await runtime.store.insert_many([failed])
    return run_id

"""Sending an event: `await send_event(name, data, id=...)`, `runtime events send` and `POST /api/events`.

An event starts one run of each task declared `task: {on: [name]}` (its data are the run's arguments; data that
do not fit make a failed run that says why), and ends the waits of runs that wait for it
(`ctx.wait_for_event`). An event with an `id` seen in the last 24 h is ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from runtime.app.current import running
from runtime.durable.events import Events, check_event
from runtime.errors import ArgumentsError, RuntimeNotStarted
from runtime.store.models import Run, utcnow

if TYPE_CHECKING:
    from runtime.app.connections import Runtime


# KEYS: the queue's delayed set, its stream. ARGV: the waiting run's message, now. A waiting run whose message is
# in the delayed set goes onto the stream at once; one whose suspend is not acked yet is made due now (the ack's
# ZADD LT keeps it early), and a worker moves it within a quarter second.
_WAKE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'data', ARGV[1])
  return 1
end
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


async def deliver(runtime: Runtime, name: str, data: Any, event_id: str | None) -> dict[str, Any]:
    """Check the event, then start its runs and end its waits; a bad event is an ArgumentsError, sending nothing."""
    text = check_event(name, data, event_id, runtime.settings.max_arguments_size)
    events = Events(runtime.broker.redis, runtime.keys)
    key = event_id or uuid.uuid4().hex
    if event_id is not None and not await events.first_time(event_id):
        return {"id": key, "name": name, "duplicate": True, "started": [], "woke": []}
    started = [await _start(runtime, function, name, data, key) for function in runtime.app.manifest.listeners(name)]
    woke = []
    wake = runtime.broker.redis.register_script(_WAKE)
    for waiter in await events.claim(name, text):
        queue = runtime.keys.queue(waiter["queue"])
        await wake(keys=[queue.delayed, queue.stream], args=[waiter["message"], time.time()])
        woke.append(waiter["run_id"])
    await events.log(name, text, key, started, woke)
    return {"id": key, "name": name, "duplicate": False, "started": started, "woke": woke}


async def _start(runtime: Runtime, function: str, name: str, data: dict[str, Any], event_id: str) -> str:
    """Start a run of `function` for the event (its id follows from the event's, so a resend starts none)."""
    run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{runtime.app.name}/{event_id}/{function}").hex
    fn = runtime.app.tasks[function]
    try:
        await runtime.submit(fn, [data], run_ids=[run_id])
    except ArgumentsError as exc:  # the run is there, failed, and says why
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

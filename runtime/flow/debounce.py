"""Debounce: enqueues of a function with the same key value within `period` make one run with the last arguments,
started `period` after the last enqueue and no later than `timeout` after the first.

The run waits in its queue's delayed set. Each enqueue is one script in the queue's slot: while the run's message
is still there (not started, not even moved to the stream), it is swapped for one with the new arguments and a
later due time; otherwise the enqueue starts the next run. So a run that has started is never changed, and a
crash between two enqueues leaves one complete message, never none.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from runtime.flow.gathering import run_script, text
from runtime.flow.paths import key_value
from runtime.store.values import from_timestamp

logger = logging.getLogger("runtime.enqueue")

# KEYS: the key's state hash, the queue's delayed set. ARGV: now, period, timeout (0: none), the run this
# enqueue means to join ('' for none) and its message with the new arguments, a new run's id and its message,
# the prefix of cancel keys -> {run id, due, 1 if the run is new}; or {false, run id, first enqueue} when the
# run to join is another one (the caller builds that one's message and tries again). A cancelled run is never
# joined: its message is still there, but it will not run.
_DEBOUNCE = """
local now, period, timeout = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'run', 'first', 'message')
local run, first, message = state[1], state[2], state[3]
local due, id
local waiting = run and message and redis.call('ZSCORE', KEYS[2], message)
if waiting and redis.call('EXISTS', ARGV[8] .. run) == 0 then
  if run ~= ARGV[4] then return {false, run, first} end
  due = now + period
  if timeout > 0 then due = math.min(due, tonumber(first) + timeout) end
  redis.call('ZREM', KEYS[2], message)
  redis.call('ZADD', KEYS[2], due, ARGV[5])
  redis.call('HSET', KEYS[1], 'message', ARGV[5])
  id = run
else
  due = now + period
  redis.call('HSET', KEYS[1], 'run', ARGV[6], 'first', ARGV[1], 'message', ARGV[7])
  redis.call('ZADD', KEYS[2], due, ARGV[7])
  id = ARGV[6]
end
redis.call('PEXPIRE', KEYS[1], math.ceil((due - now + 60) * 1000))
return {id, tostring(due), id == ARGV[6] and 1 or 0}
"""

_TRIES = 10  # another process moved the key on to a new run between our read and our script this many times


def _as_run(message: bytes, run_id: str, first: float) -> bytes:
    """The message for the run being joined: its id and its first enqueue's time, with these arguments."""
    data = orjson.loads(message)
    data["task_id"] = run_id
    data["labels"]["enqueued_at"] = first
    return orjson.dumps(data)


class Debouncer:
    """The debounce script on a runtime's Redis, and the records it keeps in step."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._script = runtime.broker.redis.register_script(_DEBOUNCE)

    async def submit(
        self,
        name: str,
        period: float,
        key: str | None,
        timeout: float | None,
        rows: list[dict[str, Any]],
        messages: list[bytes],
    ) -> list[dict[str, Any]]:
        """Each enqueue joins the waiting run of its key value (its arguments become the run's) or starts the
        next one; returns the records as enqueued, each with the id of the run it joined."""
        out = []
        for row, message in zip(rows, messages, strict=True):
            out.append(await self._one(name, period, key, timeout, row, message))
        return out

    async def _one(
        self,
        name: str,
        period: float,
        key: str | None,
        timeout: float | None,
        row: dict[str, Any],
        message: bytes,
    ) -> dict[str, Any]:
        qk = self.runtime.keys.queue(row["queue"])
        state = qk.debounce(name, key_value(row["arguments"], key, "debounce.key"))
        run: Any = None  # the first try joins nothing: the script names the waiting run, if there is one
        first: Any = None
        now = time.time()
        for _ in range(_TRIES):
            joined = _as_run(message, text(run), float(first)) if run and first else b""
            args = [repr(now), repr(period), repr(timeout or 0), text(run) if run else "", joined, row["id"], message]
            args.append(qk.cancel(""))
            reply = await run_script(self.runtime, self._script, [state, qk.delayed], args, name)
            if reply[0] is not None:
                break
            run, first = reply[1], reply[2]
        else:
            raise RuntimeError(f"debounce of '{name}': the key {state} changed {_TRIES} times during one enqueue")
        run_id, due, new = text(reply[0]), float(reply[1]), int(reply[2])
        timing = {"status": "scheduled", "scheduled_for": from_timestamp(due)}
        if new:
            row = row | timing
            try:
                await self.runtime.records.insert([row])
            except Exception as exc:  # queued: the worker's first update writes the record
                logger.warning("queued run %s of %s, but its record could not be saved (%s)", run_id, name, exc)
            return row
        try:  # the run's record keeps the last arguments (its enqueued_at stays the first enqueue's)
            await self.runtime.store.set_arguments(run_id, row["arguments"], scheduled_for=timing["scheduled_for"])
        except Exception as exc:  # the run has the new arguments all the same: its message carries them
            logger.warning("run %s of %s: could not save its new arguments (%s)", run_id, name, exc)
        return row | timing | {"id": run_id, "enqueued_at": from_timestamp(float(text(first)))}


async def save_last_arguments(runtime: Any, message: Any) -> None:
    """At a debounced run's first attempt: its record gets the arguments it runs with (an enqueue in another
    process may have saved its own after a later one's)."""
    try:
        await runtime.store.set_arguments(message.task_id, dict(message.kwargs))
    except Exception as exc:  # the run goes on; only its record lags
        logger.warning("debounced run %s: could not save its arguments (%s)", message.task_id, exc)

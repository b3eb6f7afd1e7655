"""Batches: each enqueued item joins the open batch of its key value; one run gets up to `size` items, queued at
once when it has them all, or `timeout` after its first item with fewer.

A batch is a run whose message waits in its queue's delayed set (due at first item + timeout) and whose items
are a Redis list next to it. An enqueue is one script in the queue's slot: it opens batches as needed, pushes
the items, and moves a full batch's message to the stream in the same step. A batch is open while its message
is still in the delayed set: once it has moved (full, or its time came), later items open the next batch. Each
attempt of the run reads the whole list (never pops it), so a retry or a crashed worker's successor gets the
same items; the list goes when the run has ended, or expires ITEMS_TTL after its last item.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import orjson

from runtime.errors import ArgumentsError
from runtime.flow.gathering import run_script, text
from runtime.flow.paths import key_value
from runtime.store.run_ids import new_run_ids
from runtime.store.values import from_timestamp

logger = logging.getLogger("runtime.enqueue")

ITEMS_TTL = 7 * 86400  # seconds a batch's items are kept after its last item (a run retried for longer loses them)

# KEYS: the queue's delayed set, its stream, then the open-batch hash of each key value this enqueue has items
# for. ARGV: now, size, timeout, the items lists' prefix, the cancel keys' prefix, the items' TTL (ms), n, then
# n (run id, message) pairs for the batches this enqueue may open, then per key value: its number of items and
# the items -> {the run each item joined, the runs opened, the runs queued (full)}. A cancelled batch takes no
# more items: its message is still there, but it will not run.
_ADD = """
local now, size, timeout = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local prefix, cancels, ttl, n = ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local used, joined, opened, full = 0, {}, {}, {}
local i = 8 + 2 * n
for k = 3, #KEYS do
  local state = redis.call('HMGET', KEYS[k], 'run', 'message', 'count')
  local run, message, count = state[1], state[2], tonumber(state[3] or '0')
  if not (run and message and redis.call('ZSCORE', KEYS[1], message)) then
    run = false
  elseif redis.call('EXISTS', cancels .. run) == 1 then
    run = false
  end
  local last = i + tonumber(ARGV[i])
  for j = i + 1, last do
    if not run then
      used = used + 1
      run, message, count = ARGV[6 + 2 * used], ARGV[7 + 2 * used], 0
      redis.call('ZADD', KEYS[1], now + timeout, message)
      table.insert(opened, run)
    end
    redis.call('RPUSH', prefix .. run, ARGV[j])
    redis.call('PEXPIRE', prefix .. run, ttl)
    count = count + 1
    table.insert(joined, run)
    if count >= size then
      redis.call('ZREM', KEYS[1], message)
      redis.call('XADD', KEYS[2], '*', 'data', message)
      table.insert(full, run)
      run = false
    end
  end
  i = last + 1
  if run then
    redis.call('HSET', KEYS[k], 'run', run, 'message', message, 'count', count)
    redis.call('PEXPIRE', KEYS[k], math.ceil((timeout + 60) * 1000))
  else
    redis.call('DEL', KEYS[k])
  end
end
return {joined, opened, full}
"""


def _as_batch(message: bytes, run_id: str, parameter: str, now: float) -> bytes:
    """A new batch run's message: its own id, its parameter an empty list (the worker reads the items)."""
    data = orjson.loads(message)
    data["task_id"] = run_id
    data["kwargs"] = {parameter: []}
    data["labels"]["enqueued_at"] = now
    return orjson.dumps(data)


def item_key(item: Any, path: str | None) -> str:
    """The value of a batch's key in one item (a path into the item)."""
    return key_value(item if isinstance(item, dict) else {"item": item}, path, "batch.key")


class Batcher:
    """The batch script on a runtime's Redis, and the records of the batch runs it opens."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._add = runtime.broker.redis.register_script(_ADD)

    async def submit(
        self,
        name: str,
        size: int,
        timeout: float,
        key: str | None,
        rows: list[dict[str, Any]],
        messages: list[bytes],
    ) -> list[dict[str, Any]]:
        """Each enqueue's items join their key's open batch (all of them or none: one script); returns per enqueue
        the record of the batch run its first item joined."""
        out = []
        for row, message in zip(rows, messages, strict=True):
            [(parameter, items)] = row["arguments"].items()
            if not isinstance(items, list) or not items:
                problem = f"{parameter}: a batch enqueue needs at least one item"
                raise ArgumentsError(f"bad arguments for '{name}': {problem}")
            groups: dict[str, list[Any]] = {}
            for item in items:
                groups.setdefault(item_key(item, key), []).append(item)
            out.append(await self._add_items(name, size, timeout, row, message, parameter, groups))
        return out

    async def _add_items(
        self,
        name: str,
        size: int,
        timeout: float,
        row: dict[str, Any],
        message: bytes,
        parameter: str,
        groups: dict[str, list[Any]],
    ) -> dict[str, Any]:
        qk = self.runtime.keys.queue(row["queue"])
        now = time.time()
        new = new_run_ids(sum(math.ceil(len(group) / size) + 1 for group in groups.values()))
        args: list[Any] = [repr(now), size, repr(timeout), qk.batch_items_prefix, qk.cancel(""), ITEMS_TTL * 1000]
        args += [len(new), *(part for run_id in new for part in (run_id, _as_batch(message, run_id, parameter, now)))]
        for group in groups.values():
            args += [len(group), *(orjson.dumps(item) for item in group)]
        keys = [qk.delayed, qk.stream, *(qk.batch(name, value) for value in groups)]
        joined, opened, full = await run_script(self.runtime, self._add, keys, args, name)
        runs = [text(run_id) for run_id in joined]
        queued = {text(run_id) for run_id in full}
        items = [item for group in groups.values() for item in group]  # in the order the script took them
        records = []
        for run_id in map(text, opened):
            mine = [item for item, run in zip(items, runs, strict=True) if run == run_id]
            timing = (
                {"status": "queued", "scheduled_for": None}
                if run_id in queued
                else {"status": "scheduled", "scheduled_for": from_timestamp(now + timeout)}
            )
            records.append(row | timing | {"id": run_id, "arguments": {parameter: mine}})
        try:  # the items this enqueue brought; the worker saves all of a batch's items when it starts it
            await self.runtime.records.insert(records)
        except Exception as exc:  # queued: the worker's first update writes the records
            logger.warning("queued batch run(s) of %s, but their records could not be saved (%s)", name, exc)
        first = next((r for r in records if r["id"] == runs[0]), None)
        return first or row | {"id": runs[0], "status": "scheduled", "scheduled_for": None}


async def batch_items(redis: Any, items_key: str, run_id: str) -> list[Any]:
    """A batch run's items, all of them, every attempt (read, not popped: a retry gets the same ones)."""
    raw = await redis.lrange(items_key, 0, -1)
    if not raw:
        raise LookupError(
            f"the items of batch run {run_id} are gone from Redis (kept {ITEMS_TTL // 86400} days after the last "
            "one; or Redis lost them); replay the run to send its recorded items again"
        )
    return [orjson.loads(item) for item in raw]


def _items_key(runtime: Any, message: Any) -> str:
    queue = str(message.labels.get("queue") or runtime.app.manifest.queue(message.task_name))
    return str(runtime.keys.queue(queue).batch_items(message.task_id))


async def batch_arguments(runtime: Any, message: Any) -> dict[str, Any]:
    """A batch run's arguments as its attempt gets them: its one parameter, the list of all its items. The first
    attempt saves them in the run's record (so the dashboard shows them and a replay sends them again)."""
    if len(message.kwargs) != 1:
        return dict(message.kwargs)  # not a batch message: the arguments' validation says what is wrong
    [parameter] = message.kwargs
    arguments = {parameter: await batch_items(runtime.broker.redis, _items_key(runtime, message), message.task_id)}
    if message.labels.get("attempt") == 1:
        try:
            await runtime.store.set_arguments(message.task_id, arguments)
        except Exception as exc:  # the items stay in Redis for its retries all the same
            logger.warning("batch run %s: could not save its items in its record (%s)", message.task_id, exc)
    return arguments


async def forget_items(runtime: Any, message: Any) -> None:
    """The run has ended (no retry is coming): its items go (the record keeps them)."""
    try:
        await runtime.broker.redis.delete(_items_key(runtime, message))
    except Exception as exc:  # they expire anyway
        logger.debug("batch run %s: could not delete its items (%s)", message.task_id, exc)

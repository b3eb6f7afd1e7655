"""The ceiling: a raw redis-py consumer of one stream, XREADGROUP COUNT 100 + one XACK per batch, no
other work (no message format, no middleware, no records, no concurrency limit).

python -m bench.apps.raw_app work              # the consumer (the "worker")
python -m bench.apps.raw_app fill N            # N entries, one XADD each

It reports progress as every system does, but once per batch rather than once per task (one Lua call
INCRBY + stamps), so the probe costs it nothing: the figure is what Redis and redis-py can do, the
bound a task runtime's per-task cost is measured against. A latency entry (field `t`) is stamped at
once, like every system's latency task.
"""

from __future__ import annotations

import asyncio
import sys
import time

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bench.apps import probe, producer

STREAM = "raw:tasks"
GROUP = "raw"
BATCH = 100

_RECORD_MANY = """
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
if n == tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('SET', KEYS[3], ARGV[1])
return n
"""

_client: aioredis.Redis | None = None


async def _setup() -> None:
    global _client
    _client = aioredis.from_url(probe.redis_url())


async def _teardown() -> None:
    if _client is not None:
        await _client.aclose()


async def _enqueue_noop() -> None:
    assert _client is not None
    await _client.xadd(STREAM, {"f": "noop"})


async def _enqueue_stamp(enqueued_at: float) -> None:
    assert _client is not None
    await _client.xadd(STREAM, {"t": repr(enqueued_at)})


async def _enqueue_sized(blob: str) -> None:
    assert _client is not None
    await _client.xadd(STREAM, {"f": "sized", "blob": blob})


async def work() -> None:
    client = aioredis.from_url(probe.redis_url())
    record_many = client.register_script(_RECORD_MANY)
    try:
        await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    while True:
        reply = await client.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=BATCH, block=1000)
        if not reply:
            continue
        received = time.time()  # the first batch's window starts when it arrives, not when it is acked
        entries = reply[0][1]
        done = 0
        for _id, fields in entries:
            stamp = fields.get(b"t")
            if stamp is not None:
                await client.rpush(probe.LATENCY, repr(time.time() - float(stamp)))
            else:
                done += 1
        await client.xack(STREAM, GROUP, *[entry_id for entry_id, _ in entries])
        if done:
            await record_many(
                keys=[probe.DONE, probe.FIRST, probe.LAST], args=[repr(time.time()), done, repr(received)]
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["work"]:
        asyncio.run(work())
    else:
        producer.main(
            setup=_setup,
            teardown=_teardown,
            enqueue_noop=_enqueue_noop,
            enqueue_stamp=_enqueue_stamp,
            enqueue_sized=_enqueue_sized,
        )

"""Rate limits: at most `limit` runs per `period` per key value, counted in Redis across every process, decided
at enqueue; a run over the limit is not run, it ends `skipped` (runtime/app/enqueue_flow.py).

A sliding log, not a fixed window: a fixed window lets twice the limit through around its edge (a full window
just before it turns, another just after). The log is a sorted set per function and key value holding the
runs let through in the last `period`, scored by Redis's own clock (so every process agrees on the time), and
never more than `limit` entries: older ones are trimmed before each decision. One Lua script decides a whole
enqueue at once, so concurrent enqueues in any process never let more than `limit` through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError, ResponseError

from runtime.errors import EnqueueFailed, EnqueueUnavailable
from runtime.queue.redis_client import is_cluster
from runtime.queue.stream_sends import connect

# KEYS: the logs of the key values in this enqueue. ARGV: limit, period (ms), then per run the index of its
# log in KEYS and its id -> per run 1 (let through, logged) or 0 (over the limit). Scored by Redis's clock.
_ADMIT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local limit, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local trimmed, out = {}, {}
for i = 3, #ARGV, 2 do
  local log = KEYS[tonumber(ARGV[i])]
  if not trimmed[log] then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - period)
    trimmed[log] = true
  end
  if redis.call('ZSCORE', log, ARGV[i + 1]) then
    out[#out + 1] = 1  -- let through before (the same run enqueued again, e.g. a retried cron fire)
  elseif redis.call('ZCARD', log) < limit then
    redis.call('ZADD', log, now, ARGV[i + 1])
    redis.call('PEXPIRE', log, period)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# told of every run a rate limit skipped in this process, as (function, queue, how many): /metrics counts them
# (runtime/ops/metrics.py registers itself; this room may not import it)
skipped_observers: list[Callable[[str, str, int], None]] = []


class RateLimiter:
    """The rate limits of one app's functions, held in Redis (`Keys.rate`)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._admit = redis.register_script(_ADMIT)

    async def admit(
        self, function: str, logs: Sequence[str], run_ids: Sequence[str], limit: int, period: float
    ) -> list[bool]:
        """For each run (its id, and the log of its key value): whether it may run, logging those that may.
        EnqueueUnavailable when Redis cannot be asked: only it can decide, so nothing is run or skipped."""
        places = {log: index for index, log in enumerate(dict.fromkeys(logs), start=1)}
        args: list[Any] = [limit, max(1, round(period * 1000))]
        for log, run_id in zip(logs, run_ids, strict=True):
            args += [places[log], run_id]
        try:
            answers = await self._run(list(places), args)
        except ResponseError as exc:
            raise EnqueueFailed(f"nothing was queued for '{function}': Redis refused its rate limit: {exc}") from None
        except (RedisError, OSError) as exc:
            raise EnqueueUnavailable(
                f"nothing was queued for '{function}': its rate limit needs Redis to decide, and Redis is "
                f"unreachable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "try again shortly"
            ) from None
        return [bool(int(answer)) for answer in answers]

    async def _run(self, keys: list[str], args: list[Any]) -> Any:
        if is_cluster(self.redis):  # a cluster's pipeline picks its own node
            return await self._admit(keys=keys, args=args)
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._admit(keys=keys, args=args, client=pipe)
            await connect(pipe)  # NotSent (a RedisError) before anything is written when Redis is away
            [answers] = await pipe.execute()
            return answers


def count_skipped(function: str, queue: str, count: int) -> None:
    """Tell the observers (the process's /metrics) that `count` runs of `function` were skipped."""
    for observe in skipped_observers:
        observe(function, queue, count)

"""Concurrency and throttle, held at a run's start across every worker (Inngest's order: rate limits, debounce and
batches act at enqueue; these at start).

A run of a limited function passes the gate before it starts, in the same round trip as the other runs starting
in that loop turn (one pipelined script per run):
- **concurrency** (`concurrency: {limit, key}`, and the app-wide `limits:`): a slot is a member of the limit's
  running set (`running:<limit>`), the run's id scored by when its hold lapses. Its worker renews it (every quarter
  lease), so a SIGKILLed worker's slots lapse within the lease; after a gap in which no worker reached Redis (Redis
  paused) lapsed holds are kept a lease longer, for their owners to renew (the stream leases' fence). A run that
  finds the limit full is *parked*: its stream entry is acked and its message waits in the limit's list
  (`waiting:<limit>`), holding no worker. The run that frees a slot (finished, failed, cancelled, suspended, handed
  back) sends the next waiting one to its queue; a sweep does it for slots that lapsed. Per key, so one key's
  backlog waits in its own list and other keys' runs go by it (round robin across keys).
- **throttle** (`throttle: {limit, period, burst, key}`): GCRA with reservations: a run over the rate reserves its
  turn and is sent to its queue's delayed set for then (in order, never dropped); its message says it has a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from runtime.errors import ConfigError
from runtime.flow.paths import batch_items, key_value
from runtime.queue.keys import Keys
from runtime.queue.redis_client import is_cluster

logger = logging.getLogger("runtime.flow")

RUN, PARKED, DELAYED, LOST, MAYBE = "run", "parked", "delayed", "lost", "maybe"
PARKING_READ = 200  # entries read at once while most of them are parked
SWEEP_EVERY = 1.0  # seconds between a worker's sweeps of waiting lists whose slots lapsed

_CLOCK = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- a gap since any worker last reached Redis (Redis paused): lapsed holds are kept a lease longer
local function fenced(clock, fence, lease)
  local now = now_ms()
  local last = tonumber(redis.call('GET', clock) or '0')
  redis.call('SET', clock, now)
  if now - last > lease / 2 then
    redis.call('SET', fence, now + lease, 'PX', lease * 2)
  end
  return now, now < tonumber(redis.call('GET', fence) or '0')
end
-- send up to `count` waiting runs of a limit to their queues (a list item: stream key, newline, message)
local function promote(waiting, index, limits, count)
  for _ = 1, count do
    local item = redis.call('LPOP', waiting)
    if not item then break end
    local cut = string.find(item, '\\n', 1, true)
    redis.call('XADD', string.sub(item, 1, cut - 1), '*', 'data', string.sub(item, cut + 1))
  end
  if redis.call('LLEN', waiting) == 0 then
    redis.call('SREM', index, waiting)
    redis.call('HDEL', limits, waiting)
  end
end
"""

# KEYS: clock, fence, waiting index, limits, stream, started, delayed, throttle TAT, then (running, waiting) per
# limit. ARGV: group, consumer, lease ms, entry id, run id, its message, (unused), interval ms (0: no
# throttle), tolerance ms, has a turn ('1'), parked before ('1': back to the front), acquire ('0': only park a run
# whose limit is full; 'maybe' for the others, which pass the gate when a runner takes them), then each limit.
_ADMIT = (
    _CLOCK
    + """
local lease = tonumber(ARGV[3])
local now = now_ms()
local run, pairs = ARGV[5], (#KEYS - 8) / 2
-- a run's message with a label set (our messages begin {"task_id":...,"task_name":...,"labels":{...)
local function labelled(message, label)
  local _, e = string.find(message, '"labels":{', 1, true)
  if e == nil or string.find(message, '"' .. label .. '":1', 1, true) then return message end
  local rest = string.sub(message, e + 1)
  return string.sub(message, 1, e) .. '"' .. label .. '":1' .. (string.sub(rest, 1, 1) == '}' and '' or ',') .. rest
end
-- set aside: only an entry still this consumer's is acked (then the run waits elsewhere)
local function take()
  local p = redis.call('XPENDING', KEYS[5], ARGV[1], ARGV[4], ARGV[4], 1)
  if p[1] == nil or p[1][2] ~= ARGV[2] then return false end
  redis.call('XACK', KEYS[5], ARGV[1], ARGV[4])
  redis.call('XDEL', KEYS[5], ARGV[4])
  redis.call('HDEL', KEYS[6], ARGV[4])
  return true
end
local fence = nil
for i = 1, pairs do
  local running, waiting, limit = KEYS[7 + 2 * i], KEYS[8 + 2 * i], tonumber(ARGV[12 + i])
  if not redis.call('ZSCORE', running, run) and redis.call('ZCARD', running) >= limit then
    -- full: drop lapsed holds first (unless Redis was just away: their owners get a lease to renew)
    if fence == nil then now, fence = fenced(KEYS[1], KEYS[2], lease) end
    if not fence then redis.call('ZREMRANGEBYSCORE', running, '-inf', now) end
    if redis.call('ZCARD', running) >= limit then
      if not take() then return {'lost', 0} end
      local item = KEYS[5] .. '\\n' .. labelled(ARGV[6], 'parked')
      if ARGV[11] == '1' then redis.call('LPUSH', waiting, item) else redis.call('RPUSH', waiting, item) end
      redis.call('SADD', KEYS[3], waiting)
      redis.call('HSET', KEYS[4], waiting, running .. '\\n' .. limit)
      return {'parked', i}
    end
  end
end
if ARGV[12] == '0' then return {'maybe', 0} end
local interval = tonumber(ARGV[8])
if interval > 0 and ARGV[10] ~= '1' then
  local tat = math.max(tonumber(redis.call('GET', KEYS[8]) or '0'), now)
  local at = tat - tonumber(ARGV[9])
  if at > now and not take() then return {'lost', 0} end
  redis.call('SET', KEYS[8], tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
  if at > now then
    redis.call('ZADD', KEYS[7], at / 1000, labelled(ARGV[6], 'turn'))
    return {'delayed', at}
  end
end
for i = 1, pairs do
  redis.call('ZADD', KEYS[7 + 2 * i], now + lease, run)
end
return {'run', 0}
"""
)

# KEYS: clock, fence, waiting index, limits, then (running, waiting) per limit. ARGV: lease ms, run id, each limit.
# The clock is read only when runs wait for a freed slot (the sweep keeps it ticking).
_RELEASE = (
    _CLOCK
    + """
local now, fence
for i = 1, (#KEYS - 4) / 2 do
  local running, waiting = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  redis.call('ZREM', running, ARGV[2])
  if redis.call('EXISTS', waiting) == 1 then
    if now == nil then now, fence = fenced(KEYS[1], KEYS[2], tonumber(ARGV[1])) end
    if not fence then redis.call('ZREMRANGEBYSCORE', running, '-inf', now) end
    promote(waiting, KEYS[3], KEYS[4], tonumber(ARGV[2 + i]) - redis.call('ZCARD', running))
  end
end
return 0
"""
)

# KEYS: clock, fence, waiting index, limits. ARGV: lease ms: the waiting lists whose slots lapsed get their turn.
_SWEEP = (
    _CLOCK
    + """
local now, fence = fenced(KEYS[1], KEYS[2], tonumber(ARGV[1]))
if fence then return 0 end
local moved = 0
for _, waiting in ipairs(redis.call('SRANDMEMBER', KEYS[3], 200)) do
  local spec = redis.call('HGET', KEYS[4], waiting)
  if spec then
    local cut = string.find(spec, '\\n', 1, true)
    local running = string.sub(spec, 1, cut - 1)
    redis.call('ZREMRANGEBYSCORE', running, '-inf', now)
    local free = tonumber(string.sub(spec, cut + 1)) - redis.call('ZCARD', running)
    if free > 0 then
      moved = moved + math.min(free, redis.call('LLEN', waiting))
      promote(waiting, KEYS[3], KEYS[4], free)
    end
  else
    redis.call('SREM', KEYS[3], waiting)
  end
end
return moved
"""
)


@dataclass(frozen=True)
class Slot:
    """One concurrency limit of a function: `name` names its keys (`<function>:<i>` or `@<named limit>`)."""

    name: str
    limit: int
    key: str | None


@dataclass(frozen=True)
class Throttle:
    interval: float  # seconds between starts: period / limit
    tolerance: float  # burst x interval
    key: str | None


@dataclass(frozen=True)
class StartLimits:
    slots: tuple[Slot, ...]
    throttle: Throttle | None
    batch: bool  # keys are read from the run's first item

    def arguments(self, kwargs: dict[str, Any]) -> Mapping[str, Any]:
        if not self.batch:
            return kwargs
        return next(iter(batch_items(kwargs)), {})  # a batch run's keys: its first item's


def start_limits(manifest: Any) -> dict[str, StartLimits]:
    """The functions with limits held at start, from the manifest (runtime/app/manifest.py's Manifest)."""
    out = {}
    named = manifest.limits or {}
    for name, fn in manifest.tasks().items():
        spec = fn.task
        slots = [Slot(f"{name}:{i}", c.limit, c.key) for i, c in enumerate(spec.concurrency or [])]
        slots += [Slot(f"@{limit}", named[limit].concurrency, None) for limit in spec.limits or []]
        throttle = None
        if spec.throttle is not None:
            interval = spec.throttle.period / spec.throttle.limit
            throttle = Throttle(interval, spec.throttle.burst * interval, spec.throttle.key)
        if slots or throttle is not None:
            out[name] = StartLimits(tuple(slots), throttle, spec.batch is not None)
    return out


@dataclass
class Held:
    """The slots a running run holds: its id, and (running set, waiting list, limit) per slot."""

    run_id: str
    slots: list[tuple[str, str, int]]


class Gate:
    def __init__(self, redis: Redis, keys: Keys, limits: dict[str, StartLimits], lease: float, consumer: str) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        self.lease_ms = int(lease * 1000)
        self.consumer = consumer
        self.held: dict[str, Held] = {}  # delivery key -> the slots its run holds
        self.admitted: set[str] = set()  # delivery keys that passed the gate as they were read
        self.delayed = asyncio.Event()  # set when a run was sent to wait for its turn (the delayed loop looks again)
        self.park_rate = 0.0  # of the runs that met the gate lately, the share parked (a moving average)
        self._admit = redis.register_script(_ADMIT)
        self._release = redis.register_script(_RELEASE)
        self._sweep = redis.register_script(_SWEEP)
        # scripts asked for in one loop turn (admits, releases) go to Redis in one pipeline of EVALSHAs
        self._calls: list[tuple[Any, list[str], list[Any], asyncio.Future[list[Any]] | None]] = []
        self._flushing: asyncio.Task[None] | None = None

    def _common(self) -> list[str]:
        return [self.keys.flow(name) for name in ("clock", "fence", "waiting", "limits")]

    async def admit(self, delivery: Any, message: Any, acquire: bool = True) -> tuple[str, float]:
        """RUN (its slots are held), PARKED (acked; it waits for a slot), DELAYED (acked; sent again at its turn,
        the Unix time returned) or LOST (the entry is no longer this worker's). Without `acquire` (read ahead, for
        no free runner): PARKED when a limit is full, else MAYBE (it passes the gate when a runner takes it)."""
        limits = self.limits[message.task_name]
        arguments = limits.arguments(message.kwargs)
        queue = self.keys.queue(delivery.queue)
        labels = message.labels
        slots = [(self._slot_keys(slot, arguments), slot.limit) for slot in limits.slots]
        throttle = limits.throttle
        tat = self.keys.flow("clock")
        if throttle is not None:
            tat = self.keys.flow(f"throttle:{message.task_name}:{_value(arguments, throttle.key)}")
        keys = [*self._common(), queue.stream, queue.started, queue.delayed, tat]
        keys += [key for (running, waiting), _ in slots for key in (running, waiting)]
        raw = delivery.data
        args: list[Any] = [
            self.keys.group,
            self.consumer,
            self.lease_ms,
            delivery.entry_id,
            message.task_id,
            raw,  # labelled `parked` or `turn` in the script, only if it is set aside
            "",
            0 if throttle is None else int(throttle.interval * 1000),
            0 if throttle is None else int(throttle.tolerance * 1000),
            "1" if labels.get("turn") else "0",
            "1" if labels.get("parked") else "0",
            "1" if acquire else "0",
            *(limit for _, limit in slots),
        ]
        verdict, detail = await self._pipelined(keys, args)
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        self.park_rate = 0.9 * self.park_rate + 0.1 * (verdict == PARKED)
        if verdict == RUN and slots:
            self.held[delivery.key] = Held(message.task_id, [(r, w, limit) for (r, w), limit in slots])
        elif verdict == DELAYED:
            self.delayed.set()
        return verdict, float(detail) / 1000 if verdict == DELAYED else 0.0

    async def screen(self, deliveries: list[Any], free: int, decode: Any) -> list[Any]:
        """Runs of limited functions as they are read, in one round trip: those for free runners pass the gate now;
        while most runs are parked, the others are parked at once when their limit is full (so one key's backlog is
        set aside quickly; otherwise their runner takes them through the gate). Returns the deliveries to hand to
        the runners."""
        checks: list[Coroutine[Any, Any, tuple[str, float]] | None] = []
        for delivery in deliveries:
            try:
                message = decode(delivery.data) if delivery.data is not None and delivery.started is None else None
            except Exception:
                message = None
            if message is None or message.task_name not in self.limits or (free <= 0 and not self.parking):
                checks.append(None)  # read ahead while few are parked: its runner takes it through the gate
                continue
            checks.append(self.admit(delivery, message, acquire=free > 0))
            free -= 1
        verdicts = await asyncio.gather(*(c for c in checks if c is not None), return_exceptions=True)
        answers = iter(verdicts)
        out = []
        for delivery, check in zip(deliveries, checks, strict=True):
            verdict = next(answers) if check is not None else (MAYBE, 0.0)
            if isinstance(verdict, BaseException) or verdict[0] == MAYBE:
                out.append(delivery)  # the runner takes it through the gate (or hands it back)
            elif verdict[0] == RUN:
                self.admitted.add(delivery.key)
                out.append(delivery)
        return out

    @property
    def parking(self) -> bool:
        """Most runs that met the gate lately were parked (a key's backlog): screen and read ahead many at once."""
        return self.park_rate > 0.5

    def read_ahead(self, room: int) -> int:
        """How many entries to read: while most are parked (a key's backlog), many at once, to set it aside fast."""
        return max(room, PARKING_READ) if self.parking else room

    def passed(self, delivery_key: str) -> bool:
        """Whether this entry passed the gate as it was read (once)."""
        if delivery_key in self.admitted:
            self.admitted.discard(delivery_key)
            return True
        return False

    def _slot_keys(self, slot: Slot, arguments: Mapping[str, Any]) -> tuple[str, str]:
        name = slot.name if slot.name.startswith("@") else f"{slot.name}:{_value(arguments, slot.key)}"
        return self.keys.flow(f"running:{name}"), self.keys.flow(f"waiting:{name}")

    async def _pipelined(self, keys: list[str], args: list[Any]) -> list[Any]:
        """Admit, with the other runs starting in this loop turn, in one round trip."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._call(self._admit, keys, args, future)
        return await future

    def _call(self, script: Any, keys: list[str], args: list[Any], future: asyncio.Future[list[Any]] | None) -> None:
        self._calls.append((script, keys, args, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)
        while self._calls:
            batch, self._calls = self._calls, []
            try:
                replies = await self._evalshas(batch)
            except Exception as exc:
                replies = [exc] * len(batch)
            for (*_, future), reply in zip(batch, replies, strict=True):
                if future is None:
                    if isinstance(reply, BaseException):
                        logger.warning("cannot free a concurrency slot (%s); it lapses within the lease", reply)
                elif future.done():
                    continue
                elif isinstance(reply, BaseException):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def _evalshas(self, batch: list[tuple[Any, list[str], list[Any], Any]]) -> list[Any]:
        """The batch's scripts by their SHA in one pipeline (redis-py's Script in a pipeline asks SCRIPT EXISTS
        first: a round trip more); a Redis without them (restarted) gets them loaded, and the batch is sent again
        (a script Redis did not know did not run)."""
        for _ in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for script, keys, args, _ in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            if not any(isinstance(reply, NoScriptError) for reply in replies):
                return replies
            for script in {id(script): script for script, *_ in batch}.values():
                await self.redis.script_load(script.script)
        return replies

    def release(self, delivery_key: str) -> None:
        """The run of this entry holds its slots no more (it ended, waits, or was handed back): free them, and send
        the next waiting runs to their queues, with the other calls of this loop turn. If Redis is away, the holds
        lapse instead."""
        self.admitted.discard(delivery_key)
        held = self.held.pop(delivery_key, None)
        if held is None:
            return
        keys = self._common() + [key for running, waiting, _ in held.slots for key in (running, waiting)]
        args: list[Any] = [self.lease_ms, held.run_id, *(limit for *_, limit in held.slots)]
        self._call(self._release, keys, args, None)

    async def loop(self) -> None:
        """Renew the holds of this worker's runs (every quarter lease) and sweep lapsed slots (every second)."""
        renewed = 0.0
        while True:
            loop_time = asyncio.get_running_loop().time()
            with contextlib.suppress(Exception):
                if loop_time - renewed >= self.lease_ms / 4000:
                    renewed = loop_time
                    await self.renew()
                await self._sweep(keys=self._common(), args=[self.lease_ms])
            await asyncio.sleep(min(SWEEP_EVERY, self.lease_ms / 4000))

    async def renew(self) -> None:
        holds = list(self.held.values())
        if not holds:
            return
        now_ms = int((await self.redis.time())[0] * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for held in holds:
                for running, _, _ in held.slots:
                    pipe.zadd(running, {held.run_id: now_ms + self.lease_ms}, xx=True)
            await pipe.execute()


def _value(arguments: Mapping[str, Any], path: str | None) -> str:
    try:
        return key_value(arguments, path)
    except Exception:  # checked at enqueue; a message from before the key was declared counts under ""
        return ""


def gate_for(runtime: Any, consumer: str) -> Gate | None:
    """The gate of a worker of this runtime (runtime/app/connections.py's Runtime), None when no function has a
    limit held at start. Its scripts touch a queue's stream and the flow keys at once: one Redis, not a Cluster."""
    limits = start_limits(runtime.app.manifest)
    if not limits:
        return None
    if is_cluster(runtime.broker.redis):
        raise ConfigError(
            f"{', '.join(limits)}: concurrency and throttle need one Redis (or a Sentinel set), not a Redis Cluster"
        )
    return Gate(runtime.broker.redis, runtime.keys, limits, runtime.settings.lease_seconds, consumer)

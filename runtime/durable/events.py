"""Events in Redis: the recent events, the ids seen lately (24 h by default), and the runs waiting for an event.

A run that waits (`ctx.wait_for_event`) is registered under the event's name with its match and the message
that resumes it. Sending an event claims the matching waiters in one script and hands each its event; the
registration checks the recent events in the same script as it registers, so an event sent while the run was
on its way to waiting is found, not missed. Matching compares one field of the event's data with a value
(a string, number or boolean) of the run's arguments.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

from runtime.errors import ArgumentsError
from runtime.queue.keys import Keys

EVENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")
GOT_FOR = 30 * 86400  # seconds an event that ended a wait is kept for its run to take
RECENT = 10_000  # events kept in the log (about)

# KEYS: waits hash, waking hash (of an event with an id), then got-key prefix (as ARGV[3]). ARGV: event data
# (JSON), event name, got prefix, got ttl, waking ttl (ms; 0: an event without id, no waking hash).
# -> the claimed waiters' JSON. A waiter matches when it has no field, or its value equals the data's.
_CLAIM = """
local data = cjson.decode(ARGV[1])
local out = {}
local waiters = redis.call('HGETALL', KEYS[1])
for i = 1, #waiters, 2 do
  local member, waiter = waiters[i], cjson.decode(waiters[i + 1])
  local field = waiter['field']
  if field == nil or field == cjson.null or (type(data) == 'table' and data[field] == waiter['value']) then
    redis.call('HDEL', KEYS[1], member)
    redis.call('SET', ARGV[3] .. member, ARGV[1], 'EX', tonumber(ARGV[4]))
    if tonumber(ARGV[5]) > 0 then
      redis.call('HSET', KEYS[2], member, waiters[i + 1])
      redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
    end
    table.insert(out, waiters[i + 1])
  end
end
return out
"""

# Where the delivery of an event id stands. KEYS: its seen key. ARGV: a new stamp, ms to remember the id.
# -> 'sending <stamp>' (the first send within the window stamps it; a send that failed half-way leaves it so) or
# 'sent <stamp>' (a send went through: the id is a duplicate until the key expires).
_DELIVERY = """
local state = redis.call('GET', KEYS[1])
if state then return state end
state = 'sending ' .. ARGV[1]
redis.call('SET', KEYS[1], state, 'PX', tonumber(ARGV[2]))
return state
"""

# Is there an event for this wait already (handed to it, or in the log since the wait began)?
# KEYS: got key, log stream. ARGV: since (ms), event name, field ('' for none), value (JSON).
_FIND = """
local got = redis.call('GET', KEYS[1])
if got then return got end
local value = nil
if ARGV[4] ~= '' then value = cjson.decode(ARGV[4]) end
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], ARGV[1], '+')) do
  local fields = entry[2]
  local name, data
  for j = 1, #fields, 2 do
    if fields[j] == 'name' then name = fields[j + 1] elseif fields[j] == 'data' then data = fields[j + 1] end
  end
  if name == ARGV[2] then
    if ARGV[3] == '' then return data end
    local decoded = cjson.decode(data)
    if type(decoded) == 'table' and decoded[ARGV[3]] == value then return data end
  end
end
return false
"""

# Register a wait unless its event is there already; an event found in the log is handed to the wait (its got
# key), as a claim would, so the run that resumes for it finds it. KEYS: got key, log stream, waits hash.
# ARGV: as _FIND's, then member, waiter JSON, got ttl. -> the event's data, or false (registered).
_REGISTER = (
    "local function find()\n"
    + _FIND
    + "\nend\nlocal found = find()\n"
    + "if found then redis.call('SET', KEYS[1], found, 'EX', tonumber(ARGV[7])) return found end\n"
    + "redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])\nreturn false\n"
)

# The wait timed out, unless its event is there: unregister. KEYS/ARGV as _REGISTER's (without the waiter).
_EXPIRE = (
    "local function find()\n"
    + _FIND
    + "\nend\nlocal found = find()\nif found then return found end\n"
    + "redis.call('HDEL', KEYS[3], ARGV[5])\nreturn false\n"
)


def finished_event(run_id: str) -> str:
    """The event a run sends when it ends, if a parent invoked it (`ctx.invoke`)."""
    return f"run.r{run_id}.finished"


def check_event(name: Any, data: Any, event_id: Any, max_size: int) -> bytes:
    """The event's data as JSON, or an ArgumentsError that names what is wrong (in one line)."""
    if not isinstance(name, str) or not EVENT_NAME.fullmatch(name) or len(name) > 200:
        raise ArgumentsError(
            f"event name {str(name)[:80]!r} is not a dotted name of letters, digits, '_' and '-' "
            "(like briefing.approved)"
        )
    if not isinstance(data, dict):
        raise ArgumentsError(f"event {name}: data must be a JSON object, not {type(data).__name__}")
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 200):
        raise ArgumentsError(f"event {name}: id must be a string of 1 to 200 characters, not {str(event_id)[:40]!r}")
    try:
        text = orjson.dumps(data)
    except TypeError as exc:
        raise ArgumentsError(f"event {name}: data cannot be sent as JSON: {exc}") from None
    if len(text) > max_size:
        raise ArgumentsError(
            f"event {name}: data is {len(text)} bytes of JSON; at most {max_size} (MAX_ARGUMENTS_SIZE)"
        )
    return text


@dataclass(frozen=True)
class Wait:
    """What a waiting run waits for: an event of `event`, whose data's `field` (if any) equals `value`."""

    event: str
    member: str  # run_id/step
    since_ms: int  # when the wait began: events from then on count
    field: str | None
    value: Any

    def args(self) -> list[Any]:
        value = "" if self.field is None else json.dumps(self.value)
        return [f"{self.since_ms}-0", self.event, self.field or "", value, self.member]


class Events:
    """The app's events in Redis: send, claim waiters, register and expire waits, list."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._claim = redis.register_script(_CLAIM)
        self._register = redis.register_script(_REGISTER)
        self._expire = redis.register_script(_EXPIRE)
        self._delivery = redis.register_script(_DELIVERY)

    async def delivery(self, event_id: str, seen_for: float) -> tuple[bool, str]:
        """Whether this id was sent already within `seen_for` seconds, and the stamp of its window: the first send
        in a window stamps the id, and a send that failed half-way (before `sent`) leaves it unsent, so sending it
        again finishes the job with the same stamp (the same runs) instead of being ignored."""
        stamp = str(time.time_ns())
        state = await self._delivery(keys=[self.keys.event_seen(event_id)], args=[stamp, max(1, int(seen_for * 1000))])
        status, _, stamp = _text(state).partition(" ")
        return status != "sending", stamp  # an id an older runtime remembered ("1") was sent

    async def sent(self, event_id: str, stamp: str) -> None:
        """The id's runs are queued and its waiters woken: from now on (until the window ends) it is a duplicate."""
        await self.redis.set(self.keys.event_seen(event_id), f"sent {stamp}", xx=True, keepttl=True)
        await self.redis.delete(self.keys.event_waking(event_id))

    async def claim(
        self, name: str, data: bytes, event_id: str | None = None, seen_for: float = 0
    ) -> list[dict[str, Any]]:
        """The waiters this event ends (each is handed the event, and unregistered); with an id, they are also
        kept (for `seen_for` seconds, until `sent`) for a send of the same id again to wake (`waking`)."""
        keys = [self.keys.event_waits(name), self.keys.event_waking(event_id or "")]
        ttl = int(seen_for * 1000) if event_id is not None else 0
        found = await self._claim(keys=keys, args=[data, name, self.keys.event_got(""), GOT_FOR, ttl])
        return [json.loads(w) for w in found]

    async def waking(self, event_id: str) -> list[dict[str, Any]]:
        """The waiters an earlier send of this id claimed, whose send did not go through: woken again."""
        return [json.loads(w) for w in (await self.redis.hgetall(self.keys.event_waking(event_id))).values()]

    async def log(self, name: str, data: bytes, event_id: str, started: list[str], woke: list[str]) -> None:
        fields = {
            "name": name,
            "data": data,
            "id": event_id,
            "at": f"{time.time():.3f}",
            "started": json.dumps(started),
            "woke": json.dumps(woke),
        }
        await self.redis.xadd(self.keys.events, fields, maxlen=RECENT, approximate=True)

    async def register(self, wait: Wait, waiter: dict[str, Any]) -> Any:
        """Register a wait; if its event came already, return that event's data instead (None: registered)."""
        keys = [self.keys.event_got(wait.member), self.keys.events, self.keys.event_waits(wait.event)]
        found = await self._register(keys=keys, args=[*wait.args(), json.dumps(waiter), GOT_FOR])
        return None if found is None else orjson.loads(found)

    async def got(self, wait: Wait) -> Any:
        """The event handed to this wait, if one was (None: none yet)."""
        return await self.got_for(wait.member)

    async def got_for(self, member: str) -> Any:
        """The event handed to the wait `member` (run_id/step), if one was (None: none yet)."""
        found = await self.redis.get(self.keys.event_got(member))
        return None if found is None else orjson.loads(found)

    async def expire(self, wait: Wait) -> Any:
        """The wait's time is up: its event's data if it came after all, else None (and it is unregistered)."""
        keys = [self.keys.event_got(wait.member), self.keys.events, self.keys.event_waits(wait.event)]
        found = await self._expire(keys=keys, args=wait.args())
        return None if found is None else orjson.loads(found)

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest events, newest first."""
        out = []
        for entry_id, fields in await self.redis.xrevrange(self.keys.events, count=limit):
            f = {_text(k): _text(v) for k, v in fields.items()}
            out.append(
                {
                    "id": f.get("id"),
                    "name": f.get("name"),
                    "data": json.loads(f.get("data") or "{}"),
                    "at": float(f.get("at") or 0),
                    "started": json.loads(f.get("started") or "[]"),
                    "woke": json.loads(f.get("woke") or "[]"),
                    "entry": _text(entry_id),
                }
            )
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

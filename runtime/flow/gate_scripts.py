"""The gate's Lua scripts (runtime/flow/gate.py): a run's admission, the release of its slots, and the sweep of
waiting lists whose slots lapsed. A run limited by concurrency alone is admitted in its start mark instead
(runtime/queue/broker.py's start script); these run when a limit is full, for a throttle, and while parking."""

CLOCK = """
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
ADMIT = (
    CLOCK
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

# KEYS: clock, fence, waiting index, limits, then (running, waiting) per slot of each run. ARGV: lease ms, then per
# run: its id, how many slots, each slot's limit. The runs freed in one loop turn, in one call. The clock is read
# only when runs wait for a freed slot (the sweep keeps it ticking).
RELEASE = (
    CLOCK
    + """
local lease = tonumber(ARGV[1])
local now, fence
local k, a = 5, 2
while a <= #ARGV do
  local run, n = ARGV[a], tonumber(ARGV[a + 1])
  for i = 1, n do
    local running, waiting = KEYS[k], KEYS[k + 1]
    redis.call('ZREM', running, run)
    if redis.call('EXISTS', waiting) == 1 then
      if now == nil then now, fence = fenced(KEYS[1], KEYS[2], lease) end
      if not fence then redis.call('ZREMRANGEBYSCORE', running, '-inf', now) end
      promote(waiting, KEYS[3], KEYS[4], tonumber(ARGV[a + 1 + i]) - redis.call('ZCARD', running))
    end
    k = k + 2
  end
  a = a + 2 + n
end
return 0
"""
)

# KEYS: clock, fence, waiting index, limits. ARGV: lease ms: the waiting lists whose slots lapsed get their turn.
SWEEP = (
    CLOCK
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

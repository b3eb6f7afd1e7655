"""The broker's Lua scripts (runtime/queue/broker.py): moving due delayed messages, renewing and reclaiming
leases (fenced), acking with the next attempt, handing entries back, and marking starts."""

MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, message in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'data', message)
  redis.call('ZREM', KEYS[1], message)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, first[2] or false}
"""

# Shared by the scripts below: is entry ARGV-id pending for this consumer?
OWNS = """
local function owns(stream, group, consumer, id)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  return p[1] ~= nil and p[1][2] == consumer
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Every renewal and reclaim ticks the clock; a gap means no worker reached Redis for a while (Redis was
-- paused, or every worker was away): idle times say nothing then, so owners get a lease period to renew.
local function tick(clock, fence, lease)
  local now = now_ms()
  local last = tonumber(redis.call('GET', clock) or '0')
  redis.call('SET', clock, now)
  if now - last > lease / 2 then
    redis.call('SET', fence, now + lease, 'PX', lease * 2)
  end
  return now
end
"""

# KEYS: stream, clock, fence. ARGV: group, consumer, lease_ms, ids... -> the ids this consumer no longer owns.
RENEW = (
    OWNS
    + """
tick(KEYS[2], KEYS[3], tonumber(ARGV[3]))
local lost = {}
for i = 4, #ARGV do
  if owns(KEYS[1], ARGV[1], ARGV[2], ARGV[i]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""
)

# KEYS: stream, clock, fence, started, paused. ARGV: group, consumer, lease_ms, count
# -> {{id, fields or false, started mark or false}, ...}; nothing from a paused queue
RECLAIM = (
    OWNS
    + """
local lease = tonumber(ARGV[3])
local now = tick(KEYS[2], KEYS[3], lease)
if now < tonumber(redis.call('GET', KEYS[3]) or '0') then return {} end
if redis.call('EXISTS', KEYS[5]) == 1 then return {} end
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], lease, '0-0', 'COUNT', tonumber(ARGV[4]))
local out = {}
for _, entry in ipairs(claimed[2]) do
  local id = entry[1]
  table.insert(out, {id, entry[2] or false, redis.call('HGET', KEYS[4], id) or false})
end
return out
"""
)

# KEYS: stream, started, delayed. ARGV: group, consumer, then (id, next attempt or '', due ms) per entry
# -> the ids not acked (no longer this consumer's). A failed attempt's retry is sent in the same step as its
# ack: a worker that dies before the ack has sent nothing, so the entry's next holder sends it only once.
ACK = (
    OWNS
    + """
local lost = {}
local now = now_ms()
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  if owns(KEYS[1], ARGV[1], ARGV[2], id) then
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    local retry, due = ARGV[i + 1], tonumber(ARGV[i + 2])
    if retry ~= '' then
      if due <= now then
        redis.call('XADD', KEYS[1], '*', 'data', retry)
      else
        redis.call('ZADD', KEYS[3], 'LT', due / 1000, retry)  -- LT: a waiting run woken early stays early
      end
    end
  else
    table.insert(lost, id)
  end
end
return lost
"""
)

# KEYS: stream, started. ARGV: group, consumer, ids...: hand entries back (not a crash). Each is
# queued again as a new entry, which the next read of any worker takes: a lease's reclaim would wait for the fence
# (a whole lease after Redis or its workers start, so a reload's first task waited ~12 s) and for an idle runner.
RELEASE = (
    OWNS
    + """
for i = 3, #ARGV do
  local id = ARGV[i]
  if owns(KEYS[1], ARGV[1], ARGV[2], id) then
    local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    if entry then redis.call('XADD', KEYS[1], '*', unpack(entry[2])) end
  end
end
return 0
"""
)

# KEYS: started, the queue's paused flag, then per run its cancel key and the running sets of its concurrency
# limits. ARGV: lease ms, then per run: entry id, mark, run id, how many limits, each limit's size
# -> per run: 1 (marked, its slots held: run it), 0 (cancelled: never run it), 2 (its queue is paused: hand it
# back) or 3 (a limit is full: nothing done; runtime/flow/gate.py's admit parks it). A run's slot is its id in a
# running set, scored by when its hold lapses (the gate's worker renews it).
START = """
local paused = redis.call('EXISTS', KEYS[2]) == 1
local lease = tonumber(ARGV[1])
local now = nil
local out = {}
local k, a = 3, 2
while a <= #ARGV do
  local id, mark, run, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local verdict = 1
  if redis.call('EXISTS', KEYS[k]) == 1 then
    verdict = 0
  elseif paused then
    verdict = 2
  else
    for i = 1, n do
      local running = KEYS[k + i]
      if redis.call('ZCARD', running) >= tonumber(ARGV[a + 3 + i]) and not redis.call('ZSCORE', running, run) then
        verdict = 3
        break
      end
    end
    if verdict == 1 then
      if n > 0 and now == nil then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      for i = 1, n do
        redis.call('ZADD', KEYS[k + i], now + lease, run)
      end
      redis.call('HSET', KEYS[1], id, mark)
    end
  end
  out[#out + 1] = verdict
  k = k + 1 + n
  a = a + 4 + n
end
return out
"""

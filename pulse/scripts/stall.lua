-- Mark a running task stalled and emit `stall`, once per stall however many relays ask.
-- The relay calls this for the ids the running index says are due; the hash decides.
--
-- KEYS[1]  task hash            pulse:{ns}:task:<id>
-- KEYS[2]  running index        pulse:{ns}:running
-- KEYS[3]  event stream         pulse:{ns}:events
-- ARGV[1]  task id
-- ARGV[2]  now, ms since the epoch
-- ARGV[3]  now, ISO 8601 (the event's `at`)
-- ARGV[4]  stream MAXLEN (approximate)
-- ARGV[5]  pub/sub channel
-- ARGV[6]  the publish command: SPUBLISH on a cluster with sharded channels, else PUBLISH
-- Returns {stream id, snapshot JSON} when it emitted `stall`, else false.
-- The quiet time allowed is the running step's stallAfter (hash field `after`, learned from
-- the step's history, see include/history.lua), else the task's stall seconds. A task
-- waiting for a person (`wait`) is never stalled: it goes to +inf in the index until an update.
--@include emit
local id, now_ms = ARGV[1], tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'snap', 'updated', 'stall', 'stalled', 'status',
  'after')
if not h[1] or h[5] ~= 'running' then
  redis.call('ZREM', KEYS[2], id)  -- expired or finished: no longer a running task
  return false
end
if string.find(h[1], '"waiting":true', 1, true) then
  redis.call('ZADD', KEYS[2], '+inf', id)
  return false
end
local stall_ms = 1000 * (tonumber(h[6]) or tonumber(h[3]))
local due = tonumber(h[2]) + stall_ms
if due > now_ms then
  redis.call('ZADD', KEYS[2], due, id)
  return false
end
-- Stalled or not, look again one stall period from now rather than on every tick.
redis.call('ZADD', KEYS[2], now_ms + stall_ms, id)
if h[4] then
  return false  -- already alerted for this stall
end
-- The version stays: `stalled` is derived from the clock, not a change the agent made, and
-- a journaled update replayed later must still find the version it was made on.
local t = cjson.decode(h[1])
t.stalled = true
local snap = cjson.encode(t)
redis.call('HSET', KEYS[1], 'snap', snap, 'stalled', '1')
local sid = emit(KEYS[3], ARGV[4], ARGV[6], ARGV[5], 'stall', ARGV[3], snap)
return {sid, snap}

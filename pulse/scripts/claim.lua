-- Decide whether the relay may push an event now, shared by every relay of a namespace.
-- Pushes of a task go out in event order: an event older than one already pushed is stale.
-- Heartbeats of a task go out at most once per window; a held one is asked again later.
-- The same event may be claimed again (a redelivery after a crash): at least once.
--
-- KEYS[1]  push state of the task   pulse:{ns}:pushed:<id>  (hash: event, hb)
-- ARGV[1]  stream id of the event ("<ms>-<seq>")
-- ARGV[2]  event kind
-- ARGV[3]  now, ms since the epoch
-- ARGV[4]  heartbeat window, ms
-- ARGV[5]  TTL of the push state, seconds (the task's retention)
-- Returns {'send'}, {'stale'} or {'wait', ms until the window ends}.
local function parse(sid)
  local ms, seq = string.match(sid, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local last = redis.call('HGET', KEYS[1], 'event')
if last then
  local ms, seq = parse(ARGV[1])
  local lms, lseq = parse(last)
  if ms < lms or (ms == lms and seq < lseq) then
    return {'stale'}
  end
end
local now = tonumber(ARGV[3])
if ARGV[2] == 'heartbeat' and last ~= ARGV[1] then
  local hb = tonumber(redis.call('HGET', KEYS[1], 'hb'))
  local window = tonumber(ARGV[4])
  if hb and now - hb < window then
    return {'wait', tostring(hb + window - now)}
  end
  redis.call('HSET', KEYS[1], 'hb', now)
end
redis.call('HSET', KEYS[1], 'event', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {'send'}

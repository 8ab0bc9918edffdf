-- Decide whether the relay may push a heartbeat now, shared by every relay of a namespace.
-- Heartbeats of a task go out at most once per window: a held one is asked again when its
-- window ends (the relay drops it first if a newer event of the task arrived). The heartbeat
-- that took the window may be claimed again (a redelivery after a crash): at least once.
-- Other kinds always go; the order of a task's pushes on each sink is sent.lua's.
--
-- KEYS[1]  push state of the task   pulse:{ns}:pushed:<id>  (hash: beat, hb, sent:<sink>)
-- ARGV[1]  stream id of the event ("<ms>-<seq>")
-- ARGV[2]  event kind
-- ARGV[3]  now, ms since the epoch
-- ARGV[4]  heartbeat window, ms
-- ARGV[5]  TTL of the push state, seconds (the task's retention)
-- Returns {'send'} or {'wait', ms until the window ends}.
if ARGV[2] ~= 'heartbeat' or redis.call('HGET', KEYS[1], 'beat') == ARGV[1] then
  return {'send'}
end
local now = tonumber(ARGV[3])
local hb = tonumber(redis.call('HGET', KEYS[1], 'hb'))
local window = tonumber(ARGV[4])
if hb and now - hb < window then
  return {'wait', tostring(hb + window - now)}
end
redis.call('HSET', KEYS[1], 'hb', now, 'beat', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {'send'}

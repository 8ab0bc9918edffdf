-- Decide, and mark in the same step, whether a sink pushes an event now. Shared by every
-- relay of a namespace, so the order of a task's pushes and the heartbeat throttle hold
-- however many relays run.
--
-- Order: a relay feeds each sink its events in stream order, so an event older than the one
-- the sink was last given for the task went out already, or another relay gave the sink a
-- newer one: skip it ('stale'). The marked event itself again is a redelivery after a crash:
-- send it again (at least once).
-- Throttle: heartbeats of a task go to a sink at most once per window; a held one is asked
-- again when its window ends (the relay drops it first if a newer event of the task came).
-- Other kinds always go, and do not move the window.
-- Forced: a relay that pushes alone decided by itself and is sending already; mark the event
-- (never behind a newer one) and say what the decision would have been.
--
-- KEYS[1]  push state of the task   pulse:{ns}:pushed:<id>  (hash: sent:<sink>, hb:<sink>)
-- ARGV[1]  stream id of the event ("<ms>-<seq>")
-- ARGV[2]  event kind
-- ARGV[3]  the sink's name
-- ARGV[4]  now, ms since the epoch
-- ARGV[5]  heartbeat window, ms (0: no throttle)
-- ARGV[6]  TTL of the push state, seconds (the task's retention)
-- ARGV[7]  '1': forced, '0': decide
-- Returns {verdict, ms to wait, the sink's last event of the task, its last heartbeat ms}:
-- verdict 'send', 'stale' or 'wait'; the last two as they are after the call ('' if none).
local sent_field, hb_field = 'sent:' .. ARGV[3], 'hb:' .. ARGV[3]
local state = redis.call('HMGET', KEYS[1], sent_field, hb_field)
local last, hb = state[1] or '', state[2] or ''
if last == ARGV[1] then
  return {'send', '0', last, hb}
end
if last ~= '' then
  local ms, seq = string.match(ARGV[1], '^(%d+)-(%d+)$')
  local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
  ms, seq, lms, lseq = tonumber(ms), tonumber(seq), tonumber(lms), tonumber(lseq)
  if ms < lms or (ms == lms and seq < lseq) then
    return {'stale', '0', last, hb}
  end
end
local now, window = tonumber(ARGV[4]), tonumber(ARGV[5])
local verdict, wait = 'send', 0
if ARGV[2] == 'heartbeat' and window > 0 then
  if hb ~= '' and now - tonumber(hb) < window then
    verdict, wait = 'wait', tonumber(hb) + window - now
  end
  if verdict == 'send' or ARGV[7] == '1' then
    hb = ARGV[4]
    redis.call('HSET', KEYS[1], hb_field, hb)
  end
end
if verdict == 'send' or ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], sent_field, ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  last = ARGV[1]
end
return {verdict, tostring(wait), last, hb}

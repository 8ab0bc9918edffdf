-- Mark the event a sink is about to push for a task, right before it sends it, so that no
-- sink pushes an older event of a task after a newer one. A relay feeds each sink its pushes
-- in stream order, so an event older than the sink's mark went out already (or was
-- dead-lettered): skip it. The marked event itself again is a redelivery after a crash: send
-- it again (at least once).
--
-- KEYS[1]  push state of the task   pulse:{ns}:pushed:<id>  (hash: beat, hb, sent:<sink>)
-- ARGV[1]  stream id of the event ("<ms>-<seq>")
-- ARGV[2]  the sink's field, "sent:<sink name>"
-- ARGV[3]  TTL of the push state, seconds (the task's retention)
-- Returns 'send' or 'stale'.
local function parse(sid)
  local ms, seq = string.match(sid, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local last = redis.call('HGET', KEYS[1], ARGV[2])
if last and last ~= ARGV[1] then
  local ms, seq = parse(ARGV[1])
  local lms, lseq = parse(last)
  if ms < lms or (ms == lms and seq < lseq) then
    return 'stale'
  end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 'send'

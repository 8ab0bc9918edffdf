-- Restore a task from a mirror snapshot where Redis lacks it or holds an older version.
-- Emits no event: recovered history must not be pushed again.
--
-- KEYS[1]  task hash            pulse:{ns}:task:<id>
-- KEYS[2]  updated index        pulse:{ns}:updated
-- KEYS[3]  running index        pulse:{ns}:running
-- KEYS[4]  id index             pulse:{ns}:ids
-- ARGV[1]  task id
-- ARGV[2]  snapshot JSON
-- ARGV[3]  its version
-- ARGV[4]  its status
-- ARGV[5]  its last update, ms since the epoch
-- ARGV[6]  its stall seconds
-- ARGV[7]  absolute expiry, ms since the epoch (the task keeps the expiry it had)
-- ARGV[8]  operation ids the snapshot holds the effect of (hash field `ops`, see
--          update.lua), or '': a snapshot made offline, restored where Redis lacks the task
--          (never over one it holds), does not apply them twice
-- Returns 1 if restored, 0 if Redis already held this version or a newer one.
local have = tonumber(redis.call('HGET', KEYS[1], 'version'))
if have and (have >= tonumber(ARGV[3]) or (ARGV[8] and ARGV[8] ~= '')) then
  return 0
end
local id, updated = ARGV[1], tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'snap', ARGV[2], 'version', ARGV[3], 'status', ARGV[4],
  'updated', updated, 'stall', ARGV[6])
if ARGV[8] and ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'ops', ARGV[8]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], updated, id)
if ARGV[4] == 'running' then
  redis.call('ZADD', KEYS[3], updated + 1000 * tonumber(ARGV[6]), id)
else
  redis.call('ZREM', KEYS[3], id)
end
redis.call('ZADD', KEYS[4], 0, id)
return 1

-- Create a task: store its snapshot, index it, and emit the `create` event.
--
-- KEYS[1]  task hash            pulse:{ns}:task:<id>
-- KEYS[2]  updated index        pulse:{ns}:updated   (zset, score = last update ms)
-- KEYS[3]  running index        pulse:{ns}:running   (zset, score = ms it counts as stalled)
-- KEYS[4]  id index             pulse:{ns}:ids       (zset, score 0, for prefix lookups)
-- KEYS[5]  event stream         pulse:{ns}:events
-- KEYS[6]  step history         pulse:{ns}:history        (see include/history.lua)
-- KEYS[7]  operation (only with ARGV[12]) pulse:{ns}:op:<op id>  (hash, field `id`: the
--          task the create made; expires after ARGV[13] seconds)
-- ARGV[1]  task id
-- ARGV[2]  snapshot JSON, built by model.new_task (version 1)
-- ARGV[3]  now, ms since the epoch
-- ARGV[4]  now, ISO 8601 (the event's `at`)
-- ARGV[5]  stall seconds of the task
-- ARGV[6]  retention TTL, seconds
-- ARGV[7]  stream MAXLEN (approximate)
-- ARGV[8]  pub/sub channel
-- ARGV[9]  the publish command: SPUBLISH on a cluster with sharded channels, else PUBLISH
-- ARGV[10] '0' when stall times are not learned for this task (the adaptive setting off)
-- ARGV[11] fewest past runs an ETA or a learned stall time is based on
-- ARGV[12] operation id, or absent/'' for none: a create with one applies once while KEYS[7]
--          lives (a repeat: PULSE_APPLIED <the task id it made>)
-- ARGV[13] how long an operation id is remembered, seconds
-- The first step's stallAfter and the task's eta come from the step history.
-- Returns {stream id, snapshot JSON}; error PULSE_EXISTS if the id is taken.
--@include emit
-- The operation id first: a retried create names a fresh task id, so EXISTS would not see it.
local op_id = ARGV[12] or ''
if op_id ~= '' then
  if #op_id > 64 or not string.match(op_id, '^[%w_-]+$') then
    return redis.error_reply('PULSE_BADOP operation id')
  end
  local made = redis.call('HGET', KEYS[7], 'id')
  if made then return redis.error_reply('PULSE_APPLIED ' .. made) end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('PULSE_EXISTS ' .. ARGV[1])
end
--@include history
local id, snap, now_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local pace, task = {adaptive = ARGV[10] ~= '0', qmax = 0, paused = 0}, cjson.decode(snap)
pace_start(pace, KEYS[6], task, 1, now_ms, tonumber(ARGV[11]))
pace_eta(pace, task, ARGV[4], now_ms)
snap = cjson.encode(task)
redis.call('HSET', KEYS[1], 'snap', snap, 'version', 1, 'status', 'running',
  'updated', now_ms, 'stall', ARGV[5], 'adaptive', ARGV[10], 'after', pace.after,
  pace_fields(pace))
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], now_ms, id)
redis.call('ZADD', KEYS[3], pace_deadline(pace, task, now_ms, ARGV[5]), id)
redis.call('ZADD', KEYS[4], 0, id)
if op_id ~= '' then
  redis.call('HSET', KEYS[7], 'id', id)
  redis.call('EXPIRE', KEYS[7], ARGV[13])
end
local sid = emit(KEYS[5], ARGV[7], ARGV[9], ARGV[8], 'create', ARGV[4], snap)
return {sid, snap}

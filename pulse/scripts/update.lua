-- Apply one update verb to a running task, atomically, and emit its event.
-- The transitions are those of pulse/model.py `apply`; tests hold the two to the same results.
--
-- KEYS[1]  task hash            pulse:{ns}:task:<id>
-- KEYS[2]  updated index        pulse:{ns}:updated
-- KEYS[3]  running index        pulse:{ns}:running
-- KEYS[4]  event stream         pulse:{ns}:events
-- KEYS[5]  step history         pulse:{ns}:history        (see include/history.lua)
-- KEYS[6]  history use index    pulse:{ns}:history:used
-- ARGV[1]  op: next | heartbeat | done | error | wait
-- ARGV[2]  now, ISO 8601
-- ARGV[3]  now, ms since the epoch
-- ARGV[4]  '1' if a message is given, else '0' (an empty message is still a message)
-- ARGV[5]  message (next: of the finished step; heartbeat: of the running step;
--          done: the result; error: the error)
-- ARGV[6]  progress 0-100 of the running step, or ''
-- ARGV[7]  agent name, or ''
-- ARGV[8]  retention TTL, seconds
-- ARGV[9]  stream MAXLEN (approximate)
-- ARGV[10] pub/sub channel
-- ARGV[11] the version this update makes, or '' (a journaled update replayed: applied only
--          on the version before it, so a replay is idempotent)
-- ARGV[12] operation id made by the client ([%w_-], at most 64), or '': recorded in the
--          hash field `ops` (the last 256, include/ops.lua); an op applied before is not
--          applied again (PULSE_APPLIED <version it made>)
-- ARGV[13] the 1-based index of the step the update was made for, or '': `next` and
--          `heartbeat` then apply only while that step runs (PULSE_CONFLICT <running index,
--          0 if none>), so a journaled update never lands on another step
-- ARGV[14] the publish command: SPUBLISH on a cluster with sharded channels, else PUBLISH
-- ARGV[15] runs kept per step history
-- ARGV[16] most step histories a namespace keeps
-- ARGV[17] seconds an unused step history is kept
-- ARGV[18] fewest past runs an ETA or a learned stall time is based on
-- Returns {stream id, event kind, snapshot JSON}.
-- Errors: PULSE_NOTFOUND (no such task), PULSE_APPLIED <version>, PULSE_FINISHED <status>,
-- PULSE_VERSION <current> (a replay that does not fit), PULSE_CONFLICT <running>; all change
-- nothing.
-- Time never goes back: an update stamped before the task's last one (made offline, replayed
-- after another host's) takes the task's last time, to the second as model.not_before does.
-- A task the relay marked stalled (hash field `stalled`, see stall.lua) resumes: a heartbeat
-- is emitted as `resume`; any other update emits `resume` and then its own event.
-- `wait` (message: the question) marks the task waiting for a person until the next `next`,
-- `done` or `error`; waiting, it is out of the stall scan (scored +inf in the running index).
--@include ops
--@include emit
--@include history
local h = redis.call('HMGET', KEYS[1], 'snap', 'stall', 'stalled', 'ops', 'updated',
  'adaptive', 'after', unpack(PACE))  -- 6..: the running step's pace, see include/history.lua
local raw = h[1]
if not raw then
  return redis.error_reply('PULSE_NOTFOUND')
end
local t = cjson.decode(raw)
-- [operation id] an update applied before is not applied again
local op_id, ops = ARGV[12] or '', h[4] or ''
if op_id ~= '' then
  if #op_id > 64 or not string.match(op_id, '^[%w_-]+$') then
    return redis.error_reply('PULSE_BADOP operation id')
  end
  local made = ops_find(ops, op_id)
  if made then return redis.error_reply('PULSE_APPLIED ' .. made) end
end
-- [/operation id]
if ARGV[11] and ARGV[11] ~= '' and t.version + 1 ~= tonumber(ARGV[11]) then
  return redis.error_reply('PULSE_VERSION ' .. t.version)
end
if t.status ~= 'running' then
  return redis.error_reply('PULSE_FINISHED ' .. t.status)
end

local op, now, now_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local message = nil
if ARGV[4] == '1' then message = ARGV[5] end
local steps = t.steps
local i = nil
for j = 1, #steps do
  if steps[j].status == 'running' then i = j break end
end
local step = i and steps[i]
-- [step and time] an update made for one step does not land on another; time never goes back
local want = tonumber(ARGV[13] or '')
if want and (op == 'next' or op == 'heartbeat') and i ~= want then
  return redis.error_reply('PULSE_CONFLICT ' .. (i or 0))
end
local last_ms = tonumber(h[5])
if last_ms and math.floor(last_ms / 1000) > math.floor(now_ms / 1000) then
  now, now_ms = t.updatedAt, last_ms
end
-- [/step and time]
local pace = pace_parse(h[6], h[7], h, 8)

local function finish(s, status, msg)
  s.status = status
  s.finishedAt = now
  s.progress = nil
  if msg ~= nil then s.message = msg end
end

local kind = op
local resumed = h[3] ~= false
if op == 'next' then
  if step then finish(step, 'done', message) end
  local pending = nil
  for j = (i or 0) + 1, #steps do
    if steps[j].status == 'pending' then pending = j break end
  end
  if pending then
    steps[pending].status = 'running'
    steps[pending].startedAt = now
  else
    t.status = 'done'
    t.finishedAt = now
    kind = 'done'
  end
elseif op == 'heartbeat' then
  if step then
    if message ~= nil then step.message = message end
    if ARGV[6] ~= '' then step.progress = tonumber(ARGV[6]) end
  end
elseif op == 'done' then
  if step then finish(step, 'done', nil) end
  t.status = 'done'
  t.finishedAt = now
  t.result = message or cjson.null
elseif op == 'error' then
  if step then finish(step, 'error', nil) end
  t.status = 'error'
  t.finishedAt = now
  t.error = message or cjson.null
elseif op == 'wait' then
  -- pace_update below records the wait
else
  return redis.error_reply('PULSE_BADOP ' .. op)
end
t.updatedAt = now
t.version = t.version + 1
t.stalled = false
if ARGV[7] ~= '' then t.agent = ARGV[7] end
pace_update(pace, t, op, i, message, now, now_ms, KEYS[5], KEYS[6], tonumber(ARGV[15]),
  tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18]))

local snap = cjson.encode(t)
local id = t.taskId
redis.call('HSET', KEYS[1], 'snap', snap, 'version', t.version, 'status', t.status,
  'updated', now_ms, 'after', pace.after or h[2], pace_fields(pace))
if resumed then redis.call('HDEL', KEYS[1], 'stalled') end
if op_id ~= '' then redis.call('HSET', KEYS[1], 'ops', ops_record(ops, op_id, t.version)) end
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[2], now_ms, id)
if t.status == 'running' then
  redis.call('ZADD', KEYS[3], pace_deadline(pace, t, now_ms, h[2]), id)
else
  redis.call('ZREM', KEYS[3], id)
end

local function emit_kind(k)
  return emit(KEYS[4], ARGV[9], ARGV[14], ARGV[10], k, now, snap)
end
if resumed then
  if kind == 'heartbeat' then
    kind = 'resume'
  else
    emit_kind('resume')
  end
end
return {emit_kind(kind), kind, snap}

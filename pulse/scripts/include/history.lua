-- Step history and what is learned from it: the ETA and the learned stall time (stallAfter).
-- Shared by create.lua and update.lua. pulse/model.py holds the same rules in Python (the
-- functions under "history, waiting and the ETA"); tests hold the two to the same results.
--
-- History: one field of the namespace's history hash per (task name, step name), named
-- "<task name>\n<step name>" (names hold no control characters), holding a JSON array of
-- [duration ms, longest quiet spell ms] of the step's last `keep` finished runs, oldest first.
-- A sorted set scores each field by when a run was last added, so the fields unused for `ttl`
-- seconds and the least recently used beyond `cap` are dropped as runs are added.
--
-- Pace: hidden fields of the task hash about the running step (not in the snapshot):
--   adaptive '0' when the task was created with learning turned off
--   after    the running step's stallAfter, seconds (read by stall.lua)
--   sstart   ms the running step started
--   qlast    ms of the last update counted for quiet spells
--   qmax     longest quiet spell of the running step so far, ms
--   paused   ms the running step spent waiting, ended waits only
--   waitfrom ms the current wait began
--   med      the running step's median duration, ms ('' when known from fewer runs)
--   ahead    the sum of the median durations of the steps after it, ms ('' likewise)
--   runs     the fewest past runs among those steps
local unpack = unpack or table.unpack

local function hist_field(name, step)
  return name .. '\n' .. step
end

-- Integer ms in, integer ms out: Lua and Python round the same way.
local function hist_median(v)
  local n = #v
  if n % 2 == 1 then return v[(n + 1) / 2] end
  return math.floor((v[n / 2] + v[n / 2 + 1]) / 2)
end

local function hist_p95(v)  -- nearest rank
  return v[math.floor((95 * #v + 99) / 100)]
end

local function hist_stats(raw)
  if not raw then return nil end
  local s = cjson.decode(raw)
  local d, q = {}, {}
  for k = 1, #s do
    d[k] = s[k][1]
    q[k] = s[k][2]
  end
  table.sort(d)
  table.sort(q)
  return {runs = #s, med = hist_median(d), q95 = hist_p95(q)}
end

-- What is known when step j of task t starts: its stallAfter, its median and the medians of
-- the steps after it (the ETA's parts), each only from at least `min_runs` past runs.
local function hist_plan(hkey, t, j, adaptive, min_runs)
  local fields = {}
  for k = j, #t.steps do fields[#fields + 1] = hist_field(t.taskName, t.steps[k].name) end
  local raws = redis.call('HMGET', hkey, unpack(fields))
  local plan = {after = t.stallSeconds}
  local first = hist_stats(raws[1])
  if adaptive and first and first.runs >= min_runs then
    plan.after = math.max(plan.after, math.floor((3 * first.q95 + 1999) / 2000))
  end
  local med, ahead, runs = nil, 0, nil
  for k = 1, #fields do
    local s = first
    if k > 1 then s = hist_stats(raws[k]) end
    if not s or s.runs < min_runs then return plan end
    if k == 1 then med = s.med else ahead = ahead + s.med end
    if not runs or s.runs < runs then runs = s.runs end
  end
  plan.med, plan.ahead, plan.runs = med, ahead, runs
  return plan
end

local function hist_add(hkey, ukey, field, sample, now_ms, keep, cap, ttl)
  local raw = redis.call('HGET', hkey, field)
  local s = {}
  if raw then s = cjson.decode(raw) end
  s[#s + 1] = sample
  while #s > keep do table.remove(s, 1) end
  redis.call('HSET', hkey, field, cjson.encode(s))
  redis.call('ZADD', ukey, now_ms, field)
  local drop = redis.call('ZRANGEBYSCORE', ukey, '-inf', '(' .. (now_ms - 1000 * ttl),
    'LIMIT', 0, 100)
  local over = redis.call('ZCARD', ukey) - #drop - cap
  if over > 0 then
    for _, f in ipairs(redis.call('ZRANGE', ukey, #drop, #drop + over - 1)) do
      drop[#drop + 1] = f
    end
  end
  if #drop > 0 then
    redis.call('HDEL', hkey, unpack(drop))
    redis.call('ZREM', ukey, unpack(drop))
  end
  redis.call('EXPIRE', hkey, ttl)
  redis.call('EXPIRE', ukey, ttl)
end

-- ISO 8601 arithmetic without os.date (scripts have none): `iso` + `seconds`, in iso's offset.
local function hist_days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function hist_iso_plus(iso, seconds)
  local y, mo, d, hh, mi, ss, zone =
    string.match(iso, '^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)[%.%d]*(.*)$')
  local total = hist_days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + tonumber(hh) * 3600 + tonumber(mi) * 60 + tonumber(ss) + seconds
  local z = math.floor(total / 86400)
  local sec = total - z * 86400
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d%s', year, month, day,
    math.floor(sec / 3600), math.floor(sec % 3600 / 60), sec % 60, zone)
end

-- The pace's fields; read with the snapshot and written with it: a redis.call of its own, or
-- packing them into one string, would cost a heartbeat microseconds it need not spend.
local PACE = {'sstart', 'qlast', 'qmax', 'paused', 'waitfrom', 'med', 'ahead', 'runs'}

-- h: the task hash's fields adaptive, after, then those of PACE.
local function pace_parse(adaptive, after, h, first)
  local p = {adaptive = adaptive ~= '0', after = tonumber(after)}
  for k = 1, #PACE do p[PACE[k]] = tonumber(h[first + k - 1]) end
  p.qmax, p.paused = p.qmax or 0, p.paused or 0
  return p
end

-- A step starts now: its pace from zero, and what history knows of it and the steps after.
local function pace_start(p, hkey, t, j, now_ms, min_runs)
  local plan = hist_plan(hkey, t, j, p.adaptive, min_runs)
  p.sstart, p.qlast, p.qmax, p.paused, p.waitfrom = now_ms, now_ms, 0, 0, nil
  p.after, p.med, p.ahead, p.runs = plan.after, plan.med, plan.ahead, plan.runs
  t.stallAfter = plan.after
end

-- The snapshot's eta as of now: the medians ahead, plus what remains of the running step's
-- median after the time it has run (waits not counted); null when history knows too little.
local function pace_eta(p, t, now, now_ms)
  if t.status ~= 'running' or not p.ahead or not p.sstart then
    t.eta = cjson.null
    return
  end
  local ran = now_ms - p.sstart - p.paused
  if p.waitfrom then ran = ran - (now_ms - p.waitfrom) end
  local remaining = math.floor((p.ahead + math.max(0, p.med - ran) + 500) / 1000)
  t.eta = {remainingSeconds = remaining, finishAt = hist_iso_plus(now, remaining), runs = p.runs}
end

-- One update (op) at now_ms, after the snapshot's own transition. i: the index of the step
-- that was running before it. Adds a finished step's run to the history, ends or begins a
-- wait, and sets t.waiting, t.question, t.stallAfter and t.eta.
local function pace_update(p, t, op, i, message, now, now_ms, hkey, ukey, keep, cap, ttl,
                           min_runs)
  local was_waiting = t.waiting == true
  local counts = not was_waiting
  if op == 'wait' then
    t.waiting, t.question = true, message or cjson.null
    if not was_waiting then p.waitfrom = now_ms end
  elseif op ~= 'heartbeat' then
    if was_waiting then p.paused = p.paused + now_ms - (p.waitfrom or now_ms) end
    p.waitfrom = nil
    t.waiting, t.question = false, cjson.null
  end
  if counts and p.qlast and now_ms - p.qlast > p.qmax then p.qmax = now_ms - p.qlast end
  p.qlast = now_ms
  if i and p.sstart and t.steps[i].status == 'done' then
    local d = math.max(0, now_ms - p.sstart - p.paused)
    hist_add(hkey, ukey, hist_field(t.taskName, t.steps[i].name), {d, p.qmax}, now_ms,
      keep, cap, ttl)
  end
  local j = nil
  for k = 1, #t.steps do
    if t.steps[k].status == 'running' then j = k break end
  end
  if j and j ~= i then pace_start(p, hkey, t, j, now_ms, min_runs) end
  pace_eta(p, t, now, now_ms)
end

-- The pace's fields and values, for the HSET that writes the snapshot ('' for none).
local function pace_fields(p)
  local out = {}
  for k = 1, #PACE do
    local x = p[PACE[k]]
    out[2 * k - 1], out[2 * k] = PACE[k], x == nil and '' or x
  end
  return unpack(out)
end

-- The running index's score: when the task counts as stalled; never while it waits.
local function pace_deadline(p, t, now_ms, stall)
  if t.waiting == true then return '+inf' end
  return now_ms + 1000 * (p.after or tonumber(stall) or 0)
end

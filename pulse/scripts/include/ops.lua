-- Operation ids a task applied (hash field `ops`), for replays that must apply once.
-- The field holds ' <op id>:<version it made>' entries, the newest last, at most OPS_KEEP of
-- them: a replay comes within a few updates of the original (a reply lost with the
-- connection), or at most a journal's length later (a replay killed halfway and run again).
local OPS_KEEP = 256

-- The version the op made, or nil if the task has not applied it (or forgot it).
local function ops_find(ops, op_id)
  local at = string.find(ops, ' ' .. op_id .. ':', 1, true)
  if not at then return nil end
  return string.match(ops, '^(%d+)', at + #op_id + 2)
end

-- `ops` with the op appended, the oldest entries dropped past OPS_KEEP.
local function ops_record(ops, op_id, version)
  ops = ops .. ' ' .. op_id .. ':' .. version
  local _, count = string.gsub(ops, ' ', ' ')
  local from = 1  -- where the entries kept start: at the space before the oldest kept
  while count > OPS_KEEP do
    from = string.find(ops, ' ', from + 1, true)
    count = count - 1
  end
  return string.sub(ops, from)
end

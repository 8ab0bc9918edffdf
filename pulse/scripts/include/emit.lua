-- emit(stream, maxlen, publish, channel, kind, at, snap): append one event to the namespace's
-- stream (MAXLEN ~ maxlen) and publish it on the live channel; returns its stream id.
-- publish: 'SPUBLISH' on a Redis Cluster with sharded channels (Redis 7+; the channel shares
-- the namespace's hash tag, so its slot is the script's), anything else (or nil) for PUBLISH.
local function emit(stream, maxlen, publish, channel, kind, at, snap)
  local sid = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'kind', kind, 'at', at, 'task', snap)
  if publish ~= 'SPUBLISH' then publish = 'PUBLISH' end
  redis.call(publish, channel,
    '{"id":"' .. sid .. '","kind":"' .. kind .. '","at":"' .. at .. '","task":' .. snap .. '}')
  return sid
end

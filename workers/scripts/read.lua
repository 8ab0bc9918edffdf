-- Entries for the lease holder only: a relay that lost the lease cannot take entries into
-- its hands (they would then wait for a claim, and go out after newer ones).
--
-- KEYS[1]  the lease            pulse:{ns}:relay:<group>
-- KEYS[2]  the event stream     pulse:{ns}:events
-- ARGV[1]  this relay's token
-- ARGV[2]  the sink's consumer group (<group>:<sink>)
-- ARGV[3]  this relay's consumer name
-- ARGV[4]  how many entries at most
-- ARGV[5]  'init': make the group at the end of the stream if missing (a new group or sink
--          starts with the events from its first start on); returns 1 if made.
--          'new': entries never delivered to the group; returns {entries, last id of the
--          stream} (the id only when there were none: where to wait for new ones). A group
--          that is gone (Redis lost everything) is made again from the start.
--          'claim': every pending entry of the group, whoever held it, from cursor ARGV[6];
--          returns XAUTOCLAIM's reply {next cursor, entries, ...}.
-- ARGV[6]  the claim cursor ('0-0' to begin)
--@include holds
local mode = ARGV[5]
if mode == 'init' then
  local made = redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[2], '$', 'MKSTREAM')
  if type(made) == 'table' and made.err then
    if string.find(made.err, 'BUSYGROUP', 1, true) then
      return 0
    end
    return redis.error_reply(made.err)
  end
  return 1
end
if mode == 'claim' then
  return redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[6], 'COUNT', ARGV[4])
end
local got = redis.pcall('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
  'STREAMS', KEYS[2], '>')
if type(got) == 'table' and got.err then
  if not string.find(got.err, 'NOGROUP', 1, true) then
    return redis.error_reply(got.err)
  end
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[2], '0', 'MKSTREAM')
  return {{}, '0-0'}
end
if got and got[1] and #got[1][2] > 0 then
  return {got[1][2], ''}
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
return {{}, last[1] and last[1][1] or '0-0'}

-- The lease of a namespace and relay group: the one relay holding it pushes, the others
-- stand by. A token written with SET NX PX, extended or dropped only by its holder.
--
-- KEYS[1]  the lease   pulse:{ns}:relay:<group>   (string: the holder's token)
-- ARGV[1]  this relay's token
-- ARGV[2]  'take' (if free, or ours: extend), 'renew' (only if ours), 'drop' (only if ours)
-- ARGV[3]  how long the lease lasts from now, ms
-- Returns 1 when this relay holds the lease after the call, else 0 (always 0 after 'drop').
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == 'drop' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if ARGV[2] == 'take' and not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0

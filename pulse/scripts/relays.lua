-- Who relays a namespace: each relay renews its entry every second, so each knows whether it
-- is alone (then it may push without asking push.lua first; see workers/presence.py).
-- Entries are scored by when they lapse, on the Redis server's clock: relays on hosts whose
-- clocks disagree still agree on who is there.
--
-- KEYS[1]  the relays of a consumer group   pulse:{ns}:relays:<group>  (sorted set)
-- ARGV[1]  this relay's consumer name
-- ARGV[2]  how long its entry lasts without a renewal, ms; 0: it leaves now
-- Returns {how many relays are there, this one included; 1 if this one's entry was not
-- there (it arrives, it had lapsed, or Redis lost the set), else 0}; {0, 0} after leaving.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[2])
if lease == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {0, 0}
end
local arrived = redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(lease / 1000))
return {redis.call('ZCARD', KEYS[1]), arrived}

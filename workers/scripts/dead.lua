-- Park an entry a sink could not deliver (or that does not parse) in the dead letters and
-- acknowledge it, in one step, while this relay holds the lease.
--
-- KEYS[1]  the lease            pulse:{ns}:relay:<group>
-- KEYS[2]  the event stream     pulse:{ns}:events
-- KEYS[3]  the dead letters     pulse:{ns}:dead   (stream)
-- ARGV[1]  this relay's token
-- ARGV[2]  the sink's consumer group (<group>:<sink>)
-- ARGV[3]  the entry id
-- ARGV[4]  approximate cap of the dead letters (MAXLEN ~)
-- ARGV[5..] the dead letter's fields and values (sink, error, event, kind, at, task)
-- Returns the dead letter's id.
--@include holds
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
return id

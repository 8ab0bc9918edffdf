-- The id that names this Redis and namespace for the offline journal (pulse/journal.py):
-- set on first contact, kept after. A script, so the ACL users need no command beyond those
-- the others call (docs/acl.md).
--
-- KEYS[1]  target hash          pulse:{ns}:target   (field `id`)
-- ARGV[1]  the id to set if there is none yet
-- Returns the id the namespace holds.
local id = redis.call('HGET', KEYS[1], 'id')
if not id then
  redis.call('HSET', KEYS[1], 'id', ARGV[1])
  id = ARGV[1]
end
return id

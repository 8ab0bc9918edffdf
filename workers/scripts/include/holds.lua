-- Fails unless this relay holds the lease (KEYS[1], its token ARGV[1]): a relay that froze
-- past its lease can no longer move or acknowledge any entry once another took over.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('PULSE_LEASE this relay no longer holds the lease')
end

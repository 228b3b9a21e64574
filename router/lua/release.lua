-- A session's end: KEYS[1] agent hash, ARGV[1] the session's epoch. Clears the session
-- fields only if no later session claimed the agent meanwhile.
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'worker', '', 'on_primary', '0', 'persist', '0')
end
return 0

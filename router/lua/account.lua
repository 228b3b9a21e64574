-- One push result's accounting in one script call (it was six commands: the push
-- benchmark's qagw and Redis CPU per message). KEYS: agentpush:ID, pushlat:WORKER,
-- pushevents, agent:ID; ARGV: result, counted (1/0), latency ("" if none), the event's
-- JSON, the TTL of agentpush:ID while agent:ID does not exist.
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[1], ARGV[1], 1) end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'last_latency_ms', ARGV[3])
  redis.call('LPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], 0, 999)
end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('PERSIST', KEYS[1])
else redis.call('EXPIRE', KEYS[1], ARGV[5]) end
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('LTRIM', KEYS[3], 0, 99)

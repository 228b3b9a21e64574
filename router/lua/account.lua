-- Push results' accounting, a batch of them in one script call (one call per result
-- was two calls a pushed message: sent, acked; the push benchmark's Redis CPU).
-- KEYS[1] pushlat:WORKER, KEYS[2] pushevents, then for each result i (from 0)
-- KEYS[3+2i] agentpush:ID and KEYS[4+2i] agent:ID.
-- ARGV[1] the TTL of agentpush:ID while agent:ID does not exist, then for each result i
-- ARGV[2+4i] result, ARGV[3+4i] counted (1/0), ARGV[4+4i] latency ms ("" if none),
-- ARGV[5+4i] the event's JSON. Latencies and events are pushed in the batch's order.
local lats, evs = {}, {}
for i = 0, (#KEYS - 2) / 2 - 1 do
  local k, a = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local res, lat = ARGV[2 + 4 * i], ARGV[4 + 4 * i]
  if ARGV[3 + 4 * i] == '1' then redis.call('HINCRBY', k, res, 1) end
  if lat ~= '' then
    redis.call('HSET', k, 'last_latency_ms', lat)
    lats[#lats + 1] = lat
  end
  if redis.call('EXISTS', a) == 1 then redis.call('PERSIST', k)
  else redis.call('EXPIRE', k, ARGV[1]) end
  evs[#evs + 1] = ARGV[5 + 4 * i]
end
if #lats > 0 then
  redis.call('LPUSH', KEYS[1], unpack(lats))
  redis.call('LTRIM', KEYS[1], 0, 999)
end
if #evs > 0 then
  redis.call('LPUSH', KEYS[2], unpack(evs))
  redis.call('LTRIM', KEYS[2], 0, 99)
end

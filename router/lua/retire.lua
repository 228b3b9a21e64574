-- An operator retires a worker that is down (DELETE /api/workers/NAME, qagw workers
-- remove NAME); each live worker's router runs it again for a retired worker whose
-- router-assigned agents are all moved. ARGV: 1 prefix, 2 worker name.
-- Returns {result, assigned left, pinned agents released}: result 'alive' (it has a
-- heartbeat: refused), 'unknown' (not in P workers), 'retiring' (its router-assigned
-- agents are being moved: its last_seen_ms is set long ago, so the routers move them as
-- for a worker lost longer than reassign_after, at once) or 'removed' (out of the
-- registry). Agents pinned to it now name a primary that no worker is: P unresolved.
local P, n = ARGV[1], ARGV[2]
if redis.call('EXISTS', P..'worker:'..n) == 1 then return {'alive', 0, 0} end
if redis.call('SISMEMBER', P..'workers', n) == 0 then return {'unknown', 0, 0} end
local pinned = 0
for _, a in ipairs(redis.call('SMEMBERS', P..'primaries:'..n)) do
  if redis.call('HGET', P..'agent:'..a, 'pinned') == '1' then
    redis.call('HSET', P..'agent:'..a, 'primary', '')
    redis.call('SADD', P..'unresolved', a)
    redis.call('SREM', P..'primaries:'..n, a)
    pinned = pinned + 1
  end
end
local assigned = redis.call('SCARD', P..'assigned:'..n)
if assigned > 0 then
  redis.call('HSET', P..'workerinfo:'..n, 'last_seen_ms', '1', 'retired', '1')
  return {'retiring', assigned, pinned}
end
redis.call('SREM', P..'workers', n)
redis.call('DEL', P..'workerinfo:'..n, P..'pushstats:'..n, P..'pushlat:'..n,
  P..'marker:'..n, P..'primaries:'..n, P..'assigned:'..n, P..'sweep:'..n)
return {'removed', 0, pinned}

-- The pool as the router sees it. ARGV[1] prefix. Returns per worker
-- {name, alive, state, capacity, node, address, tls, last_seen_ms, assigned, retired}.
local P = ARGV[1]
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', P..'workers')) do
  local h = redis.call('HMGET', P..'worker:'..n, 'state', 'capacity', 'node', 'address', 'tls')
  local i = redis.call('HMGET', P..'workerinfo:'..n, 'capacity', 'node', 'address', 'tls',
    'last_seen_ms', 'retired')
  out[#out + 1] = {n, h[1] and '1' or '0', h[1] or 'down', h[2] or i[1] or '1',
    h[3] or i[2] or '', h[4] or i[3] or '', h[5] or i[4] or '0', i[5] or '0',
    tostring(redis.call('SCARD', P..'assigned:'..n)), i[6] or '0'}
end
return out

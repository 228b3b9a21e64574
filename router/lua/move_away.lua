-- A sweep's batch away from a drained or lost worker. ARGV: 1 prefix, 2 from, 3 eps,
-- then (agent, ring order) pairs. Returns the moves as {agent, primary, ...}, or
-- {'!serving'} when from serves (again).
-- include: lib.lua
local from, eps = ARGV[2], tonumber(ARGV[3])
if redis.call('HGET', P..'worker:'..from, 'state') == 'serving' then return {'!serving'} end
local pl, out = pool(), {}
for i = 4, #ARGV, 2 do
  local a = ARGV[i]
  local h = redis.call('HMGET', P..'agent:'..a, 'primary', 'pinned')
  if h[1] == from and h[2] == '0' then
    local new = pick(pl, ARGV[i + 1], pl.total + 1, eps)
    if new ~= '' then
      set_primary(a, from, new)
      pl.load[new] = pl.load[new] + 1
      pl.total = pl.total + 1
      tell(a, new)
      out[#out + 1] = a
      out[#out + 1] = new
    end
  else
    redis.call('SREM', P..'assigned:'..from, a)
  end
end
return out

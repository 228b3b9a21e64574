-- A joining worker's rebalance batch: agents of from whose ring order starts with
-- target move to it while its load is under the bound (the total does not change: these
-- are moves). Agents with a live session stay where they are: a rebalance never
-- interrupts a session. ARGV: 1 prefix, 2 from, 3 target, 4 eps, then agents.
-- Returns {agent, target, ...}.
-- include: lib.lua
local from, target, eps = ARGV[2], ARGV[3], tonumber(ARGV[4])
local pl, out = pool(), {}
if not pl.cap[target] or not pl.cap[from] then return out end
for i = 5, #ARGV do
  local a = ARGV[i]
  local h = redis.call('HMGET', P..'agent:'..a, 'primary', 'pinned', 'worker')
  local live = h[3] and h[3] ~= '' and
    redis.call('EXISTS', P..'worker:'..h[3]) == 1
  if h[1] == from and h[2] == '0' and not live and
     pl.load[target] < bound(pl, target, pl.total, eps) then
    set_primary(a, from, target)
    pl.load[target] = pl.load[target] + 1
    pl.load[from] = pl.load[from] - 1
    out[#out + 1] = a
    out[#out + 1] = target
  end
end
return out

-- Shared by the router's scripts that decide primaries (claim, move_away, move_to,
-- set_primary, refill: each has "-- include: lib.lua", which scripts/embed.sh replaces
-- by this file). Each of them passes the key prefix as ARGV[1].
--   pool() reads the serving workers' capacities and router-assigned loads;
--   pick() takes the first worker of a ring order (space-separated names, then any
--     serving worker the caller did not know of, by name) whose load is under
--     ceil((1 + eps) * total * capacity / capacity sum), computed in the same order as
--     rt_bound (router/rt_ring.h);
--   keepable() says whether an assignment stays: its worker serves, or is down for
--     less than reassign_after;
--   set_primary() moves an agent's router-assigned primary; tell() publishes a
--     REASSIGN to the worker holding the agent's session.
-- Key names: router/rt_keys.h.
local P = ARGV[1]
local function pool()
  local pl = {cap = {}, load = {}, sum = 0, total = 0}
  for _, n in ipairs(redis.call('SMEMBERS', P..'workers')) do
    local h = redis.call('HMGET', P..'worker:'..n, 'state', 'capacity')
    if h[1] == 'serving' then
      local c = tonumber(h[2]) or 1
      pl.cap[n] = c
      pl.sum = pl.sum + c
      pl.load[n] = redis.call('SCARD', P..'assigned:'..n)
      pl.total = pl.total + pl.load[n]
    end
  end
  return pl
end
local function bound(pl, n, total, eps)
  return math.ceil((1 + eps) * total * pl.cap[n] / pl.sum)
end
local function pick(pl, order, total, eps)
  local function fits(n) return pl.cap[n] ~= nil and pl.load[n] < bound(pl, n, total, eps) end
  for n in string.gmatch(order, '%S+') do if fits(n) then return n end end
  local rest = {}
  for n in pairs(pl.cap) do rest[#rest + 1] = n end
  table.sort(rest)
  for _, n in ipairs(rest) do if fits(n) then return n end end
  return ''
end
local function keepable(w, now, ra)
  if w == '' then return false end
  local st = redis.call('HGET', P..'worker:'..w, 'state')
  if st then return st == 'serving' end
  local seen = tonumber(redis.call('HGET', P..'workerinfo:'..w, 'last_seen_ms') or '0') or 0
  return seen > 0 and now - seen < ra
end
local function set_primary(a, old, new)
  if old ~= '' then
    redis.call('SREM', P..'assigned:'..old, a)
    redis.call('SREM', P..'primaries:'..old, a)
  end
  if new ~= '' then
    redis.call('SADD', P..'assigned:'..new, a)
    redis.call('SADD', P..'primaries:'..new, a)
  end
  local sw = redis.call('HGET', P..'agent:'..a, 'worker') or ''
  redis.call('HSET', P..'agent:'..a, 'primary', new, 'pinned', '0',
    'on_primary', (sw ~= '' and sw == new) and '1' or '0')
end
local function tell(a, new)
  local sw = redis.call('HGET', P..'agent:'..a, 'worker')
  if sw and sw ~= '' and redis.call('EXISTS', P..'worker:'..sw) == 1 then
    redis.call('PUBLISH', P..'ctl:'..sw, 'reassign '..a..' '..new)
  end
end

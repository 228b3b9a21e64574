-- A session's claim (HELLO) or announce. KEYS[1] agent hash, KEYS[2] epoch counter.
-- P unresolved: the agents pinned to a primary that matches no worker.
-- ARGV: 1 prefix, 2 agent, 3 worker, 4 node, 5 primary (pinned), 6 pinned,
-- 7 primary_as_sent, 8 persist, 9 since_ms, 10 announce_only, 11 eps, 12 now_ms,
-- 13 ms since the last heartbeat after which a lost worker's agents move, 14 hint,
-- 15 ring order.
-- Returns {epoch, primary} (epoch 0 when an announce finds the session held elsewhere).
-- A hint is used only when Redis has no record of the agent (refill from the store).
-- include: lib.lua
local a = ARGV[2]
local old = redis.call('HMGET', KEYS[1], 'worker', 'epoch', 'primary', 'pinned')
local ow, oe, op, opin = old[1] or '', old[2] or '0', old[3] or '', old[4] or ''
if ARGV[10] == '1' and ow ~= '' and ow ~= ARGV[3] then return {0, ''} end
local primary = ARGV[5]
if ARGV[6] == '1' then
  if op ~= '' then
    redis.call('SREM', P..'assigned:'..op, a)
    redis.call('SREM', P..'primaries:'..op, a)
  end
  if primary ~= '' then redis.call('SADD', P..'primaries:'..primary, a) end
  redis.call('HSET', KEYS[1], 'primary', primary, 'pinned', '1')
  -- named a primary that matches no worker (a mistyped -x): listed by the admin port
  if primary == '' and ARGV[7] ~= '' then redis.call('SADD', P..'unresolved', a)
  else redis.call('SREM', P..'unresolved', a) end
else
  redis.call('SREM', P..'unresolved', a)
  local cur = ''
  if opin == '0' then cur = op elseif opin == '' then cur = ARGV[14] end
  local now, ra = tonumber(ARGV[12]), tonumber(ARGV[13])
  if keepable(cur, now, ra) then primary = cur
  else
    if op ~= '' then
      redis.call('SREM', P..'assigned:'..op, a)
      redis.call('SREM', P..'primaries:'..op, a)
      op = ''
    end
    local pl = pool()
    primary = pick(pl, ARGV[15], pl.total + 1, tonumber(ARGV[11]))
  end
  set_primary(a, op, primary)
end
local onp = (primary ~= '' and primary == ARGV[3]) and '1' or '0'
local epoch = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'worker', ARGV[3], 'node', ARGV[4],
  'primary_as_sent', ARGV[7], 'on_primary', onp, 'persist', ARGV[8],
  'since_ms', ARGV[9], 'epoch', epoch)
if ARGV[10] ~= '1' and ow ~= '' and ow ~= ARGV[3] then
  redis.call('PUBLISH', P..'ctl:'..ow, 'supersede '..a..' '..oe)
end
return {epoch, primary}

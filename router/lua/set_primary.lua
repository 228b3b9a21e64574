-- An operator sets an agent's primary (admin PUT /api/agents/ID/primary).
-- No KEYS; ARGV: 1 prefix, 2 agent, 3 worker. Returns {status, old primary}:
-- 0 set (REASSIGN published to the worker holding the agent's session, if it moved),
-- 1 set for an agent Redis had no record of, 2 refused: the agent names its own
-- primary (pinned), 3 unknown worker.
-- include: lib.lua
local a, w = ARGV[2], ARGV[3]
if redis.call('SISMEMBER', P..'workers', w) == 0 then return {3, ''} end
local h = redis.call('HMGET', P..'agent:'..a, 'primary', 'pinned')
if h[2] == '1' then return {2, h[1] or ''} end
local old = h[1] or ''
set_primary(a, old, w)
if old ~= w then tell(a, w) end
return {h[2] and 0 or 1, old}

-- A push's routing. KEYS[1] agent hash. ARGV: 1 prefix, 2 agent, 3 commit_ms, 4 n,
-- 5 policy ('any': to the session's worker, else to the primary).
-- Returns {target, session worker, subscribers reached}.
local h = redis.call('HMGET', KEYS[1], 'primary', 'worker')
local target, sw = h[1] or '', h[2] or ''
if sw ~= '' and redis.call('EXISTS', ARGV[1]..'worker:'..sw) == 0 then sw = '' end
if ARGV[5] == 'any' then target = sw end
if target == '' then return {'', sw, 0} end
local n = redis.call('PUBLISH', ARGV[1]..'push:'..target,
  ARGV[2]..' '..ARGV[3]..' '..ARGV[4]..' '..sw)
return {target, sw, n}

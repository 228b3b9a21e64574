-- Push routing for the recipients of one committed batch, in one script call (one call a
-- recipient was the push benchmark's largest Redis cost: the call's own overhead, ten
-- times a batch). KEYS[i] the agent hash of recipient i. ARGV: 1 prefix, 2 commit_ms,
-- 3 policy ('any': to the session's worker, else to the primary), then for each recipient
-- i (from 1) ARGV[2 + 2i] its id and ARGV[3 + 2i] its message count.
-- Returns, for each recipient in order, {target, session worker, subscribers reached}.
local out, live = {}, {}
for i = 1, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'primary', 'worker')
  local target, sw = h[1] or '', h[2] or ''
  if sw ~= '' then
    if live[sw] == nil then -- a worker's liveness, read once a call
      live[sw] = redis.call('EXISTS', ARGV[1]..'worker:'..sw) == 1
    end
    if not live[sw] then sw = '' end
  end
  if ARGV[3] == 'any' then target = sw end
  local n = 0
  if target ~= '' then
    n = redis.call('PUBLISH', ARGV[1]..'push:'..target,
      ARGV[2 + 2 * i]..' '..ARGV[2]..' '..ARGV[3 + 2 * i]..' '..sw)
  end
  out[i] = {target, sw, n}
end
return out

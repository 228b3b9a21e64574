-- Refill from the store after Redis lost its data: ARGV 1 prefix, then (agent, primary)
-- pairs; only agents Redis has no primary for. Returns how many were set.
-- include: lib.lua
local n = 0
for i = 2, #ARGV, 2 do
  if not redis.call('HGET', P..'agent:'..ARGV[i], 'primary') then
    set_primary(ARGV[i], '', ARGV[i + 1])
    n = n + 1
  end
end
return n

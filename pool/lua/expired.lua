--[[ expired: the workers of one queue whose heartbeat expired, for reclaim; O(expired).
  KEYS[1]  the queue's worker registry (ZSET, score = liveness deadline in server ms: heartbeat.lua)
  KEYS[2]  the registry of workers of a pool version before the sorted one (SET), read only
           while it exists: a pool upgraded in place, or upgraded host by host, still has them
  ARGV[1]  key prefix of this queue ('<prefix>:{q}:'; liveness keys are built from it)
  ARGV[2]  the most ids returned (bounds the script's time; the caller asks again when full)
  Returns  ids of registered workers whose liveness key is gone (requeue.lua 'reclaim' takes each)
  A worker past its deadline whose liveness key still lives was renewed by PEXPIRE alone (a beat
  refused at maxmemory): its deadline becomes the key's, so it is not met again at every pass.
  Expiry is judged by Redis: TIME here, the key's TTL in requeue.lua. ]]
local registry, legacy = KEYS[1], KEYS[2]
local qprefix, limit = ARGV[1], tonumber(ARGV[2])
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local found = {}
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', registry, '-inf', now_ms, 'LIMIT', 0, limit)) do
  local ttl = redis.call('PTTL', qprefix .. 'alive:' .. worker)
  if ttl == -2 then
    found[#found + 1] = worker
  else
    redis.pcall('ZADD', registry, 'XX', now_ms + math.max(ttl, 0), worker)  -- refused at maxmemory: met again
  end
end
if #found < limit and redis.call('EXISTS', legacy) == 1 then
  for _, worker in ipairs(redis.call('SMEMBERS', legacy)) do
    if #found < limit and redis.call('EXISTS', qprefix .. 'alive:' .. worker) == 0 then
      found[#found + 1] = worker
    end
  end
end
return found

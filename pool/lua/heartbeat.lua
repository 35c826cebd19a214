--[[ heartbeat: a worker's beat on one queue, with its deadline in the server's clock.
  KEYS[1]  the worker's liveness key in this queue (STRING with PX TTL)
  KEYS[2]  the queue's worker registry (ZSET, score = liveness deadline in server ms)
  KEYS[3]  the worker's cancel requests on this queue (SET)
  ARGV[1]  worker id
  ARGV[2]  state: busy, idle or stopping (the liveness key's value)
  ARGV[3]  ttl_ms: how long the worker counts as alive without a next beat
  Returns  up to 1000 ids of running jobs that `pool cancel` asked this worker to stop
  The deadline is TIME + ttl_ms, the instant the liveness key expires: expired.lua finds the
  expired workers by score in O(expired), never by asking every worker's key, and no host's
  clock is compared with another's. The liveness key stays the judge (requeue.lua 'reclaim'
  checks it): at maxmemory a refused beat still extends it with PEXPIRE, which ZADD cannot do. ]]
local alive, registry, cancel = KEYS[1], KEYS[2], KEYS[3]
local worker, state, ttl_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('SET', alive, state, 'PX', ttl_ms)
redis.call('ZADD', registry, now_ms + ttl_ms, worker)
return redis.call('SPOP', cancel, 1000)

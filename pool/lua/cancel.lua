--[[ cancel: stop a job that has not finished.
  KEYS[1]  queue list (LIST)   KEYS[2]  delayed set (ZSET)   KEYS[3]  job hash (HASH)
  KEYS[4]  done list of the job (LIST)   KEYS[5]  stats hash (HASH)
  ARGV[1]  job id   ARGV[2]  now_ms   ARGV[3]  result TTL in ms (the job's own wins)
  ARGV[4]  key prefix of the queue ('<prefix>:{q}:'; the worker's cancel set is built from it)
  ARGV[5]  channel to publish ARGV[6] on, or ''   ARGV[6]  event payload (JSON)
  ARGV[7]  recent_max: how many ids the queue's 'recent:cancelled' list keeps
  Returns  a CancelCode (pool/lua/codes.py): CANCELLED (it was queued or waiting to retry:
           it is finished as 'cancelled'); REQUESTED (it is running: its worker cancels it at its
           next heartbeat; or it was claimed and not started: claim.lua finishes it as cancelled
           when it would start it); FINISHED already (nothing to cancel); NOT_FOUND (no such job)
  Invariant: a waiting job leaves its list or set exactly when it is marked cancelled, so it
  can never be claimed afterwards. ]]
--@include codes
--@include finish
local queue, delayed, job, done, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, now_ms, ttl_ms, qprefix, channel = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]

local state = redis.call('HMGET', job, 'status', 'worker')
local status = state[1]
if not status then
  return CancelCode.NOT_FOUND
end
if status == 'active' then
  redis.call('HSET', job, 'cancel_requested_ms', now_ms)
  redis.call('SADD', qprefix .. 'cancel:' .. state[2], id)
  return CancelCode.REQUESTED
end
local removed = 0
if status == 'queued' then
  removed = redis.call('LREM', queue, 1, id)
  if removed == 0 then
    -- moved into a worker's active list but not started yet: claim.lua cancels it at its start
    redis.call('HSET', job, 'cancel_requested_ms', now_ms)
    return CancelCode.REQUESTED
  end
elseif status == 'retrying' or status == 'delayed' then
  removed = redis.call('ZREM', delayed, id)
end
if removed == 0 then
  return CancelCode.FINISHED
end
ttl_ms = tonumber(redis.call('HGET', job, 'result_ttl_ms')) or ttl_ms
finish_cancelled(qprefix, stats, id, now_ms, ttl_ms, tonumber(ARGV[7]))
if channel ~= '' then
  redis.call('PUBLISH', channel, ARGV[6])
end
return CancelCode.CANCELLED

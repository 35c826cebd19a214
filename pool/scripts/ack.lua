--[[ ack: record a job's outcome and release it from its worker, in one step.
  KEYS[1]  active list of the worker (LIST)
  KEYS[2]  job hash (HASH)
  KEYS[3]  done list of the job (LIST): one token wakes callers blocked waiting for the result
  KEYS[4]  stats hash of the queue (HASH): completed / failed totals
  ARGV[1]  job id
  ARGV[2]  status: 'completed' or 'failed'
  ARGV[3]  now_ms
  ARGV[4]  default result TTL in ms (the job's own result_ttl_ms field wins)
  ARGV[5]  worker id (to recognise a retried ack of this worker's own, already written)
  ARGV[6..] field/value pairs to store: result, or error and traceback
  Returns  1 acked; 0 already acked by this worker (a retry after a lost reply: nothing changes);
           -1 the id is not in this worker's active list (requeued or reclaimed meanwhile:
           nothing is written, the job will run again or already has)
  Invariant: the id leaves the active list exactly when the outcome is written. ]]
local active, job, done, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, status, now_ms, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[5]

if redis.call('LREM', active, 1, id) == 0 then
  local current = redis.call('HMGET', job, 'status', 'worker')
  if current[1] == status and current[2] == worker then
    return 0
  end
  return -1
end
local ttl_ms = tonumber(redis.call('HGET', job, 'result_ttl_ms')) or tonumber(ARGV[4])
redis.call('HSET', job, 'status', status, 'finished_ms', now_ms, unpack(ARGV, 6))
redis.call('PEXPIRE', job, ttl_ms)
redis.call('RPUSH', done, status)
redis.call('PEXPIRE', done, ttl_ms)
redis.call('HINCRBY', stats, status, 1)
return 1

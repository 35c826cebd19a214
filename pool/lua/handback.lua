--[[ handback: give one claimed id back to the head of its queue, not started, or started by
  claim.lua but not run.
  KEYS[1]  active list of the worker (LIST)
  KEYS[2]  queue list (LIST)
  KEYS[3]  job hash (HASH)
  KEYS[4]  stale set of the queue (SET, includes/stale.lua)
  ARGV[1]  job id
  ARGV[2]  optional: the started_ms that claim.lua wrote when it started the job for this
           worker (ARGV[3]), which then never ran it: the start is undone (status 'queued',
           attempts and deliveries counted back down)
  ARGV[3]  optional: the worker id
  Returns  1 handed back (or dropped: a stale entry, its job cancelled while it waited); 0 not
           in the active list, or started and not by that claim
           (reconcile may have started it meanwhile): nothing moved
  Used when a job reaches a process whose job slots are all busy (the watcher's BLMOVE, with or
  without the claim.lua pipelined after it): the job goes to a worker that can run it now
  instead of waiting here.
  Invariant: the id leaves the active list exactly when it returns to the queue, and a job that
  claim.lua marked active is never put back while it runs. ]]
local state = redis.call('HMGET', KEYS[3], 'status', 'started_ms', 'worker')
local unstart = ARGV[2] and state[1] == 'active' and state[2] == ARGV[2] and state[3] == ARGV[3]
if (state[1] == 'active' and not unstart) or redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
if unstart then
  redis.call('HSET', KEYS[3], 'status', 'queued')
  redis.call('HINCRBY', KEYS[3], 'attempts', -1)
  redis.call('HINCRBY', KEYS[3], 'deliveries', -1)
end
if not unstart and redis.call('SREM', KEYS[4], ARGV[1]) == 1 then
  return 1  -- cancelled while it waited (includes/stale.lua): its entry is dropped, not put back
end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1

--[[ handback: give one claimed id back to the head of its queue, not started, or started by
  claim.lua but not run.
  KEYS[1]  landing list of the worker (LIST, '<prefix>:{q}:active:<worker>'): ids its BLMOVE
           moved, not started
  KEYS[2]  queue list (LIST)
  KEYS[3]  job hash (HASH)
  KEYS[4]  stale set of the queue (SET, includes/stale.lua)
  KEYS[5]  running set of the worker (ZSET, score = started_ms): where a started job is
  KEYS[6]  ready list of the queue (LIST, includes/signal.lua): one token when the id went back
  ARGV[1]  job id
  ARGV[2]  optional: the started_ms that claim.lua wrote when it started the job for this
           worker (ARGV[3]), which then never ran it: the start is undone (status 'queued',
           attempts and deliveries counted back down)
  ARGV[3]  optional: the worker id
  Returns  1 handed back (or dropped: a stale entry, its job cancelled while it waited); 0 not
           in the landing list (not started) or the running set (started by that claim), or
           started and not by that claim
           (reconcile may have started it meanwhile): nothing moved
  Used when a job reaches a process whose job slots are all busy (the watcher's BLMOVE, with or
  without the claim.lua pipelined after it): the job goes to a worker that can run it now
  instead of waiting here.
  Cost: O(log n) in the n jobs the worker runs (ZREM; LREM of a landing list of a few ids).
  Invariant: the id leaves the landing list or the running set exactly when it returns to the
  queue, and a job that claim.lua marked active is never put back while it runs. ]]
--@include signal
local landing, queue, job, stale, running_set, ready = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, started_ms, worker = ARGV[1], ARGV[2], ARGV[3]
local state = redis.call('HMGET', job, 'status', 'started_ms', 'worker')
local unstart = started_ms and state[1] == 'active' and state[2] == started_ms and state[3] == worker
if state[1] == 'active' and not unstart then
  return 0
end
if unstart then
  if redis.call('ZREM', running_set, id) == 0 then
    return 0
  end
  redis.call('HSET', job, 'status', 'queued')
  redis.call('HINCRBY', job, 'attempts', -1)
  redis.call('HINCRBY', job, 'deliveries', -1)
else
  if redis.call('LREM', landing, 1, id) == 0 then
    return 0
  end
  if redis.call('SREM', stale, id) == 1 then
    return 1  -- cancelled while it waited (includes/stale.lua): its entry is dropped, not put back
  end
end
redis.call('RPUSH', queue, id)
signal_ready(ready)
return 1

--[[ handback: give one claimed, not yet started id back to the head of its queue.
  KEYS[1]  active list of the worker (LIST)
  KEYS[2]  queue list (LIST)
  KEYS[3]  job hash (HASH)
  ARGV[1]  job id
  Returns  1 handed back; 0 not in the active list, or already started (reconcile may have
           started it meanwhile): nothing moved
  Used when a blocking BLMOVE delivers a job to a process whose job slots are all busy: the job
  goes to a worker that can run it now instead of waiting here.
  Invariant: the id leaves the active list exactly when it returns to the queue, and a job that
  claim.lua marked active is never put back while it runs. ]]
if redis.call('HGET', KEYS[3], 'status') == 'active' or redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1

--[[ handback: give one claimed, not yet started id back to the head of its queue.
  KEYS[1]  active list of the worker (LIST)
  KEYS[2]  queue list (LIST)
  ARGV[1]  job id
  Returns  1 handed back, 0 not in the active list (nothing moved)
  Used when a blocking BLMOVE delivers a job to a process whose job slots filled up meanwhile:
  the job goes to a worker that can run it now instead of waiting here.
  Invariant: the id leaves the active list exactly when it returns to the queue. ]]
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1

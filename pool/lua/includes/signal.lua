--[[ signal: ready tokens, how a worker process that waits on many queues learns that one of them
  has jobs (issue 17: one blocking wait per process instead of one BLMOVE per empty queue).
  <qprefix>ready  (LIST) at most one token ('1'): "this queue may hold claimable jobs". Every
                  script that makes a queue's jobs claimable (enqueue, promote, handback, requeue,
                  retry_dead, fire) calls signal_ready; claim.lua signals again after its claim
                  when the queue still holds jobs, so one token wakes one process, and that
                  process wakes the next only if there is more (no thundering herd).
  A process in shared-wait mode BLPOPs the ready lists of the queues it found empty; the token
  carries no job: the claim stays a move inside claim.lua. A token popped by a process that then
  cannot claim (no free slot) is pushed back (signal.lua), so it is never held by a busy process.
  Rejected: the queue's 'wake' pub/sub channel (the scheduler's; a message sent while nobody
  listens is lost, where a token waits); BLPOP on the queue lists themselves (pops a job id into
  a process's memory, where a crash loses it). ]]

--[[ signal_ready(ready): leave one token in the queue's ready list (key '<qprefix>ready'),
  unless one is there already: the list never holds more than one. ]]
local function signal_ready(ready)
  if redis.call('LLEN', ready) == 0 then
    redis.call('RPUSH', ready, '1')
  end
end

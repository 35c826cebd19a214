--[[ cancel: stop a job that has not finished.
  KEYS[1]  queue list (LIST)   KEYS[2]  delayed set (ZSET)   KEYS[3]  job hash (HASH)
  KEYS[4]  done list of the job (LIST)   KEYS[5]  stats hash (HASH)
  ARGV[1]  job id   ARGV[2]  now_ms   ARGV[3]  result TTL in ms (the job's own wins)
  ARGV[4]  key prefix of the queue ('<prefix>:{q}:'; the worker's cancel set, the queue's
           stale set and its index of retrying jobs are built from it)
  ARGV[5]  channel to publish ARGV[6] on, or ''   ARGV[6]  event payload (JSON)
  ARGV[7]  recent_max: how many ids the queue's 'recent:cancelled' list keeps
  Returns  a CancelCode (pool/lua/codes.py): CANCELLED (it was queued, also moved by a BLMOVE
           and not started yet, or waiting to retry: it is finished as 'cancelled'); REQUESTED (it
           is running: its worker cancels it at its next heartbeat); FINISHED already (nothing to
           cancel); NOT_FOUND (no such job)
  Cost: constant in the depth of the queue. A queued id at either end of the queue is taken out;
  anywhere else it stays in place, marked in the queue's stale set (<qprefix>stale, see
  includes/stale.lua), and the claim that reaches it drops it without starting it.
  Invariant: a waiting job is marked cancelled in the same step that takes its id out of the
  delayed set, or out of the queue, or marks its entry stale, so it can never start afterwards. ]]
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
-- A queued id is in the queue list or, moved by a BLMOVE whose claim has not run yet, in a
-- worker's landing list ('active:<worker>'); which one is not known without a scan. (A started
-- job is in its worker's running set: it is 'active' and only asked to stop, above.) At an end
-- of the queue it is taken out; anywhere else its entry is marked stale: the claim (or handback,
-- or requeue) that meets it drops it.
local function leave_queue()
  if redis.call('LINDEX', queue, -1) == id then
    redis.call('RPOP', queue)
  elseif redis.call('LINDEX', queue, 0) == id then
    redis.call('LPOP', queue)
  else
    redis.call('SADD', qprefix .. 'stale', id)
  end
  return 1
end

local removed = 0
if status == 'queued' then
  removed = leave_queue()
elseif status == 'retrying' or status == 'delayed' then
  removed = redis.call('ZREM', delayed, id)
  redis.call('ZREM', qprefix .. 'retrying', id)  -- the index of retrying jobs (ack.lua)
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

--[[ claim: promote due jobs, then take up to k ready jobs into a worker's active list and mark
  them active, in one step.
  KEYS[1]  queue list (LIST)
  KEYS[2]  active list of this worker for this queue (LIST)
  KEYS[3]  delayed set of the queue (ZSET, score = due_ms): due jobs move to the queue first
  ARGV[1]  key prefix of this queue ('<prefix>:{q}:'; the same hash tag as KEYS)
  ARGV[2]  worker id
  ARGV[3]  now_ms
  ARGV[4]  k: how many more ids to move from the queue (0 allowed)
  ARGV[5]  how many jobs the worker's process runs right now
  ARGV[6]  solo_at: deliveries from which a job runs alone (see below)
  ARGV[7]  result TTL in ms (for a job finished as cancelled here; the job's own TTL wins)
  ARGV[8]  optional: an id already in the active list (moved by BLMOVE, or found by reconcile)
           to be started first; ignored unless it is still in that list
  A job whose cancellation was requested (cancel_requested_ms) is finished as 'cancelled' here
  instead of being started: a request made while its worker died, or while it waited for a slot,
  is never lost.
  Returns  {next_due_ms, claimed}: when the earliest delayed job falls due (-1: none), and in
           claimed one array per claimed job: the job hash as HGETALL pairs (status 'active', attempts
           and deliveries counted up by one), plus 'solo','1' for a redelivered job;
           {'id', <id>, 'missing', '1'} for an id whose record is gone (dropped from the list);
           {'solo_wait', '1'} when the next job is a suspect one and the process is busy.
  Suspect jobs (deliveries >= solo_at: workers died holding them that often) run alone: only
  a process with nothing running claims one, and it claims nothing else with it. Deaths from
  then on are counted against the job alone, so a poison job never takes its batch-mates to the
  dead set with it (solo_at < max_deliveries), while one crash costs no throughput (solo_at 2).
  Invariant: ids move queue -> active with LMOVE, never through the script's memory only, so a
  crash at any point leaves each id in exactly one list. Job hashes are built as
  ARGV[1] .. 'job:' .. id: they carry the queue's hash tag, in the same slot as KEYS. ]]
local queue, active, delayed = KEYS[1], KEYS[2], KEYS[3]
local qprefix, worker, now_ms = ARGV[1], ARGV[2], ARGV[3]
local k, running, solo_at, ttl_ms, moved = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]

-- Promote: due jobs join the tail of the queue (in due order), each exactly once.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', delayed, id)
  redis.call('LPUSH', queue, id)
  redis.call('HSET', qprefix .. 'job:' .. id, 'status', 'queued', 'updated_ms', now_ms)
end
local next_due = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2] or -1

local claimed = {}
local function redelivered(id)
  return tonumber(redis.call('HGET', qprefix .. 'job:' .. id, 'deliveries') or '0') >= solo_at
end
local function start(id, solo)
  local job = qprefix .. 'job:' .. id
  if redis.call('EXISTS', job) == 0 then
    redis.call('LREM', active, 1, id)
    claimed[#claimed + 1] = {'id', id, 'missing', '1'}
    return
  end
  if redis.call('HEXISTS', job, 'cancel_requested_ms') == 1 then
    redis.call('LREM', active, 1, id)
    local ttl = tonumber(redis.call('HGET', job, 'result_ttl_ms')) or ttl_ms
    redis.call('HSET', job, 'status', 'cancelled', 'finished_ms', now_ms, 'updated_ms', now_ms,
      'error', 'Cancelled: cancelled before it started')
    redis.call('PEXPIRE', job, ttl)
    redis.call('RPUSH', qprefix .. 'done:' .. id, 'cancelled')
    redis.call('PEXPIRE', qprefix .. 'done:' .. id, ttl)
    redis.call('HINCRBY', qprefix .. 'stats', 'cancelled', 1)
    return
  end
  local state = redis.call('HMGET', job, 'status', 'worker')
  if not (state[1] == 'active' and state[2] == worker) then  -- else: started before, reply lost
    redis.call('HSET', job, 'status', 'active', 'started_ms', now_ms, 'updated_ms', now_ms, 'worker', worker)
    redis.call('HINCRBY', job, 'attempts', 1)
    redis.call('HINCRBY', job, 'deliveries', 1)
  end
  local record = redis.call('HGETALL', job)
  if solo then
    record[#record + 1] = 'solo'
    record[#record + 1] = '1'
  end
  claimed[#claimed + 1] = record
end

if moved and not redis.call('LPOS', active, moved) then
  -- A claim that arrives late (held up by a partition after its client gave up) names an id
  -- that was acknowledged or requeued meanwhile: starting it would resurrect a finished job.
  moved = nil
end
if moved then
  local again = redelivered(moved) and redis.call('HGET', qprefix .. 'job:' .. moved, 'status') ~= 'active'
  if again and running > 0 then
    redis.call('LREM', active, 1, moved)
    redis.call('RPUSH', queue, moved)  -- back at the head, for a process with nothing running
    return {next_due, {{'solo_wait', '1'}}}
  end
  start(moved, again)
  if again then
    return {next_due, claimed}
  end
end
for _ = 1, k do
  local head = redis.call('LINDEX', queue, -1)
  if not head then
    break
  end
  if redelivered(head) then
    if #claimed == 0 and running == 0 then
      redis.call('LMOVE', queue, active, 'RIGHT', 'LEFT')
      start(head, true)
    elseif #claimed == 0 then
      claimed[1] = {'solo_wait', '1'}
    end
    break
  end
  redis.call('LMOVE', queue, active, 'RIGHT', 'LEFT')
  start(head, false)
end
return {next_due, claimed}

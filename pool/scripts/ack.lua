--[[ ack: record the outcome of an attempt and release the job from its worker, in one step.
  KEYS[1]  active list of the worker (LIST)
  KEYS[2]  job hash (HASH)
  KEYS[3]  done list of the job (LIST): one token wakes callers blocked waiting for the result
  KEYS[4]  stats hash of the queue (HASH): a total per outcome
  KEYS[5]  delayed set of the queue (ZSET, score = due_ms): retrying jobs wait here
  KEYS[6]  dead set of the queue (ZSET, score = now_ms)
  ARGV[1]  job id
  ARGV[2]  outcome: 'completed' | 'failed' | 'cancelled' (finished, kept for the result TTL),
           'dead' (kept in the dead set), 'retrying' (waits in the delayed set until due_ms)
  ARGV[3]  now_ms
  ARGV[4]  TTL in ms: the default result TTL (the job's own result_ttl_ms field wins), or for
           'dead' the dead-letter TTL
  ARGV[5]  worker id (to recognise a retried ack of this worker's own, already written)
  ARGV[6]  due_ms ('retrying'), or ''
  ARGV[7]  dead_max: the most dead jobs kept in this queue (the oldest are deleted)
  ARGV[8]  history entry (a JSON object) appended to the job's 'history' array, or ''
  ARGV[9]  channel to publish ARGV[10] on, or '' (events off)
  ARGV[10] event payload (JSON)
  ARGV[11] key prefix of the queue ('<prefix>:{q}:'), to delete the oldest dead jobs' keys, to
           name the queue's wake channel (told when a retry becomes the earliest delayed job),
           its per-minute tally and its lists of recently finished ids
  ARGV[12] recent_max: how many ids each 'recent:<outcome>' list keeps (newest first; it may
           hold up to 100 more between trims)
  ARGV[13..] field/value pairs to store: result, or error and traceback
  Also counts the attempt in the queue's tally of the current minute (server clock), per second:
  'c<s>' for completed, 'f<s>' for a failed attempt (retrying, failed or dead), so `pool status`
  sums exactly the last 60 s and the last hour. The tally key lives 62 minutes.
  Returns  1 acked; 2 acked as 'cancelled' instead of 'retrying' (cancellation was requested
           while the attempt ran; also the answer to a retry of that ack); 0 already acked by
           this worker (a retry after a lost reply: nothing changes);
           -1 the id is not in this worker's active list (requeued, reclaimed or cancelled
           meanwhile: nothing is written, the job will run again or already has)
  Invariant: the id leaves the active list exactly when the outcome is written, and lands in
  exactly one place: finished (hash with TTL), the delayed set or the dead set. ]]
local active, job, done, stats, delayed, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, outcome, now_ms, ttl_ms, worker = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local due_ms, dead_max, entry, channel = ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]

if redis.call('LREM', active, 1, id) == 0 then
  local current = redis.call('HMGET', job, 'status', 'worker', 'finished_ms')
  if current[2] == worker and current[1] == 'cancelled' and outcome == 'retrying' and current[3] == now_ms then
    return 2  -- a retried ack (same now_ms) of an attempt this script finished as cancelled (below)
  end
  if current[1] == outcome and current[2] == worker then
    return 0
  end
  return -1
end

local event = ARGV[10]
local acked = 1
if outcome == 'retrying' and redis.call('HEXISTS', job, 'cancel_requested_ms') == 1 then
  outcome, acked = 'cancelled', 2  -- cancelled while this attempt ran: no further attempt
  event = string.gsub(event, '"status":"retrying"', '"status":"cancelled"', 1)
end
-- deliveries counts hand-overs nobody acknowledged: this one was, whatever its outcome.
-- The previous attempt's result or error must not outlive this one's.
redis.call('HDEL', job, 'error', 'traceback', 'result')
redis.call('HSET', job, 'status', outcome, 'updated_ms', now_ms, 'deliveries', 0, unpack(ARGV, 13))
if outcome == 'retrying' or outcome == 'dead' or outcome == 'failed' then
  redis.call('HINCRBY', job, 'failures', 1)  -- failed attempts: what retries are counted against
end
if entry ~= '' then
  local history = redis.call('HGET', job, 'history')
  if history then
    history = string.sub(history, 1, -2) .. ',' .. entry .. ']'
  else
    history = '[' .. entry .. ']'
  end
  redis.call('HSET', job, 'history', history)
end

if outcome == 'retrying' then
  local earliest = tonumber(redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2])
  redis.call('ZADD', delayed, due_ms, id)
  if not earliest or tonumber(due_ms) < earliest then
    redis.call('PUBLISH', ARGV[11] .. 'wake', due_ms)  -- the scheduler re-arms its timer
  end
  redis.call('HSET', job, 'due_ms', due_ms)
else
  redis.call('HSET', job, 'finished_ms', now_ms)
  if outcome == 'dead' then
    redis.call('ZADD', dead, now_ms, id)
    redis.call('ZREMRANGEBYSCORE', dead, '-inf', tonumber(now_ms) - ttl_ms)
    local excess = redis.call('ZCARD', dead) - dead_max
    if excess > 0 then
      local prefix = ARGV[11]
      for _, old in ipairs(redis.call('ZRANGE', dead, 0, excess - 1)) do
        -- only a job that is still dead: the id may have been enqueued again since
        if redis.call('HGET', prefix .. 'job:' .. old, 'status') == 'dead' then
          redis.call('DEL', prefix .. 'job:' .. old, prefix .. 'done:' .. old)
        end
      end
      redis.call('ZREMRANGEBYRANK', dead, 0, excess - 1)
    end
  else
    ttl_ms = tonumber(redis.call('HGET', job, 'result_ttl_ms')) or ttl_ms
  end
  redis.call('PEXPIRE', job, ttl_ms)
  redis.call('RPUSH', done, outcome)
  redis.call('PEXPIRE', done, ttl_ms)
end
redis.call('HINCRBY', stats, outcome, 1)
local kind = (outcome == 'completed' and 'c') or (outcome ~= 'cancelled' and 'f') or nil
if kind then
  local now_s = tonumber(redis.call('TIME')[1])
  local tally = ARGV[11] .. 'tally:' .. math.floor(now_s / 60)
  if redis.call('HINCRBY', tally, kind .. (now_s % 60), 1) == 1 then
    redis.call('EXPIRE', tally, 3720)  -- once per kind and second, not per job
  end
end
if outcome == 'completed' or outcome == 'failed' or outcome == 'cancelled' then
  local recent, recent_max = ARGV[11] .. 'recent:' .. outcome, tonumber(ARGV[12])
  if redis.call('LPUSH', recent, id) > recent_max + 100 then
    redis.call('LTRIM', recent, 0, recent_max - 1)  -- trimmed in batches of 100: cheaper per job
  end
end
if channel ~= '' then
  redis.call('PUBLISH', channel, event)
end
return acked

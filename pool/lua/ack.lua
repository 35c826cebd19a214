--[[ ack: record the outcomes of a worker's finished attempts on one queue and release the jobs
  from the worker, each in one step; one call carries every ack a worker has ready for the queue.
  KEYS[1]  running set of the worker for this queue (ZSET, score = started_ms: claim.lua)
  KEYS[2]  stats hash of the queue (HASH): a total per outcome
  KEYS[3]  delayed set of the queue (ZSET, score = due_ms): retrying jobs wait here, and are
           indexed as well in <qprefix>retrying (ZSET, same scores: the retrying ones only)
  KEYS[4]  dead set of the queue (ZSET, score = now_ms)
  ARGV[1]  key prefix of the queue ('<prefix>:{q}:'): job hashes and done lists are built from
           it (same hash tag as KEYS), as are the queue's wake channel (told when a retry becomes
           the earliest delayed job), its per-minute tally and its lists of recently finished ids
  ARGV[2]  worker id (to recognise a retried ack of this worker's own, already written)
  ARGV[3]  recent_max: how many ids each 'recent:<outcome>' list keeps (newest first; it may
           hold up to 100 more between trims)
  ARGV[4]  dead_max: the most dead jobs kept in this queue (the oldest are deleted)
  ARGV[5]  channel to publish each ack's event on, or '' (events off)
  ARGV[6..] the acks, each as 9 values followed by its fields:
           id;
           outcome: 'completed' | 'failed' | 'cancelled' (finished, kept for the TTL),
             'dead' (kept in the dead set), 'retrying' (waits in the delayed set until due_ms);
           now_ms;
           TTL in ms: how long a finished job's record stays (the caller resolves the job's own
             result_ttl), or for 'dead' the dead-letter TTL;
           due_ms ('retrying') or '';
           clear: '1' to delete the error, traceback and result of an earlier attempt first
             (the caller knows from the claimed record whether there are any), or '';
           history entry (a JSON object) appended to the job's 'history' array, which keeps
             the last 20 ('history_count' of them, 'history_dropped' older: includes/history.lua), or '';
           event payload (JSON) to publish, or '';
           n: how many field/value values follow (result, or error and traceback).
  Also counts the attempts in the queue's tally of the current minute (server clock), per
  second: 'c<s>' for completed, 'f<s>' for a failed attempt (retrying, failed or dead), so
  `pool status` sums exactly the last 60 s and the last hour. The tally key lives 62 minutes.
  Each minute's total goes to the queue's 'minutes' hash too ('c<minute>', 'f<minute>'; the
  last 62 minutes are kept): status reads an hour in one hash and two minutes' seconds.
  Totals, tallies and recent lists are written once per call, not once per ack.
  Returns  one AckCode per ack, in order (pool/lua/codes.py): ACKED; CANCELLED, acked as
           'cancelled' instead of 'retrying' (cancellation was requested while it ran; also the
           answer to a retry of that ack); ALREADY_ACKED by this worker (a retry after a lost
           reply: nothing changes); NOT_ACTIVE, the id is not in this worker's running set
           (requeued, reclaimed or cancelled meanwhile: nothing is written, the job will run
           again or already has)
  Cost: O(log n) per ack in the n jobs the worker runs (ZREM), never a scan of them.
  Invariant: each id leaves the running set exactly when its outcome is written, and lands in
  exactly one place: finished (hash with TTL), the delayed set or the dead set. A call that
  fails halfway (an error reply) leaves the acks before the failure written and the rest
  untouched; sent again, the written ones answer ALREADY_ACKED. ]]
--@include codes
--@include finish
--@include history
local running_set, stats, delayed, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local qprefix, worker, recent_max, dead_max, channel = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

local codes, totals, recent = {}, {}, {}
local counted = {c = 0, f = 0}

local function count(outcome, id)
  totals[outcome] = (totals[outcome] or 0) + 1
  if outcome == 'completed' then
    counted.c = counted.c + 1
  elseif outcome ~= 'cancelled' then
    counted.f = counted.f + 1
  end
  if outcome == 'completed' or outcome == 'failed' or outcome == 'cancelled' then
    recent[outcome] = recent[outcome] or {}
    table.insert(recent[outcome], id)
  end
end

local function retried(job, id, outcome, now_ms)
  local current = redis.call('HMGET', job, 'status', 'worker', 'finished_ms')
  if current[2] == worker and current[1] == 'cancelled' and outcome == 'retrying' and current[3] == now_ms then
    return AckCode.CANCELLED  -- a retried ack (same now_ms) of an attempt this script finished as cancelled (below)
  end
  if current[1] == outcome and current[2] == worker then
    return AckCode.ALREADY_ACKED
  end
  return AckCode.NOT_ACTIVE
end

local function ack(at)
  local id, outcome, now_ms, ttl_ms = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  local due_ms, clear, entry, event = ARGV[at + 4], ARGV[at + 5], ARGV[at + 6], ARGV[at + 7]
  local n = tonumber(ARGV[at + 8])
  local job = qprefix .. 'job:' .. id
  if redis.call('ZREM', running_set, id) == 0 then
    return retried(job, id, outcome, now_ms)
  end
  local code = AckCode.ACKED
  if outcome == 'retrying' and redis.call('HEXISTS', job, 'cancel_requested_ms') == 1 then
    outcome, code = 'cancelled', AckCode.CANCELLED  -- cancelled while this attempt ran: no further attempt
    event = string.gsub(event, '"status":"retrying"', '"status":"cancelled"', 1)
  end
  local failed = outcome == 'retrying' or outcome == 'dead' or outcome == 'failed'
  if clear == '1' or failed then
    redis.call('HDEL', job, 'error', 'traceback', 'result')  -- no earlier attempt's outcome outlives this one
  end
  if failed then
    redis.call('HINCRBY', job, 'failures', 1)  -- failed attempts: what retries are counted against
  end
  if entry ~= '' then
    append_history(job, entry)  -- the last 20 attempts, and a count of those dropped
  end
  -- deliveries counts hand-overs nobody acknowledged: this one was, whatever its outcome.
  if outcome == 'retrying' then
    redis.call('HSET', job, 'status', outcome, 'updated_ms', now_ms, 'deliveries', 0, 'due_ms', due_ms,
      unpack(ARGV, at + 9, at + 8 + n))
    local earliest = tonumber(redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2])
    redis.call('ZADD', delayed, due_ms, id)
    redis.call('ZADD', qprefix .. 'retrying', due_ms, id)  -- the retrying jobs' own index: `pool jobs --status retrying`
    if not earliest or tonumber(due_ms) < earliest then
      redis.call('PUBLISH', qprefix .. 'wake', due_ms)  -- the scheduler re-arms its timer
    end
  elseif outcome == 'dead' then
    bury(qprefix, dead, id, now_ms, ttl_ms, dead_max, 'deliveries', 0, unpack(ARGV, at + 9, at + 8 + n))
  else
    finish(qprefix, id, outcome, now_ms, ttl_ms, 'deliveries', 0, unpack(ARGV, at + 9, at + 8 + n))
  end
  count(outcome, id)
  if channel ~= '' and event ~= '' then
    redis.call('PUBLISH', channel, event)
  end
  return code
end

local at = 6
while at <= #ARGV do
  codes[#codes + 1] = ack(at)
  at = at + 9 + tonumber(ARGV[at + 8])
end

for outcome, total in pairs(totals) do
  redis.call('HINCRBY', stats, outcome, total)
end
-- Drop the minutes hash's fields older than 61 minutes: once per kind and minute, over at most
-- ~124 fields (the fields of an hour, and those of a queue idle meanwhile).
local function forget_minutes(minutes, minute)
  local fields = redis.call('HKEYS', minutes)
  for _, field in ipairs(fields) do
    if tonumber(string.sub(field, 2)) < minute - 61 then
      redis.call('HDEL', minutes, field)
    end
  end
end

if counted.c + counted.f > 0 then
  local now_s = tonumber(redis.call('TIME')[1])
  local minute = math.floor(now_s / 60)
  local tally, minutes = qprefix .. 'tally:' .. minute, qprefix .. 'minutes'
  for kind, total in pairs(counted) do
    if total > 0 and redis.call('HINCRBY', tally, kind .. (now_s % 60), total) == total then
      redis.call('EXPIRE', tally, 3720)  -- once per kind and second, not per job
    end
    if total > 0 and redis.call('HINCRBY', minutes, kind .. minute, total) == total then
      forget_minutes(minutes, minute)
      redis.call('EXPIRE', minutes, 3720)
    end
  end
end
for outcome, ids in pairs(recent) do
  push_recent(qprefix, outcome, ids, recent_max)
end
return codes

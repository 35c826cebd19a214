--[[ finish: the blocks every script that ends a job shares (ack, claim, cancel, requeue). Each
  key is built from the queue's key prefix qprefix ('<prefix>:{q}:'), so it carries the hash tag
  of the caller's KEYS and lives in the same Cluster slot. ]]

--[[ finish(qprefix, id, outcome, now_ms, ttl_ms, ...): the job leaves for good as `outcome`
  ('completed', 'failed', 'cancelled' or 'dead'); `...` are more field/value pairs to set.
  <qprefix>job:<id>   job hash (HASH): status, finished_ms, updated_ms and `...` are set
  <qprefix>done:<id>  done token (LIST): `outcome` is pushed, waking callers blocked on the result
  Invariant: the record and its done token expire together, ttl_ms after the job finished. The
  caller has taken the id out of its list or set in the same script. ]]
local function finish(qprefix, id, outcome, now_ms, ttl_ms, ...)
  local job, done = qprefix .. 'job:' .. id, qprefix .. 'done:' .. id
  redis.call('HSET', job, 'status', outcome, 'finished_ms', now_ms, 'updated_ms', now_ms, ...)
  redis.call('PEXPIRE', job, ttl_ms)
  redis.call('RPUSH', done, outcome)
  redis.call('PEXPIRE', done, ttl_ms)
end

--[[ push_recent(qprefix, outcome, ids, recent_max): note finished ids, newest first.
  <qprefix>recent:<outcome>  (LIST) the queue's recently finished ids with that outcome
  Invariant: it keeps the newest recent_max ids, and at most 100 more between trims (trimmed in
  batches of 100: cheaper per job than an LTRIM each time). ]]
local function push_recent(qprefix, outcome, ids, recent_max)
  local list = qprefix .. 'recent:' .. outcome
  if redis.call('LPUSH', list, unpack(ids)) > recent_max + 100 then
    redis.call('LTRIM', list, 0, recent_max - 1)
  end
end

--[[ finish_cancelled(qprefix, stats, id, now_ms, ttl_ms, recent_max): a job cancelled before it
  started (cancel.lua: it was waiting; claim.lua: its cancellation was requested after a worker
  took it). stats is the queue's stats hash (HASH): its 'cancelled' total counts it.
  Invariant: as finish; one text for the outcome, whichever script saw it. ]]
local function finish_cancelled(qprefix, stats, id, now_ms, ttl_ms, recent_max)
  finish(qprefix, id, 'cancelled', now_ms, ttl_ms, 'error', 'Cancelled: cancelled before it started')
  redis.call('HINCRBY', stats, 'cancelled', 1)
  push_recent(qprefix, 'cancelled', {id}, recent_max)
end

--[[ bury(qprefix, dead, id, now_ms, dead_ttl_ms, dead_max, ...): the job is finished as 'dead'
  (retries exhausted, or a poison job) and kept in the dead set; `...` as for finish.
  dead  the queue's dead set (ZSET, score = now_ms)
  Invariant: the dead set holds no id buried more than dead_ttl_ms ago (its record has expired)
  and at most dead_max ids; the oldest go first, and an old id's job hash and done token are
  deleted only if it is still dead (it may have been enqueued again since). ]]
local function bury(qprefix, dead, id, now_ms, dead_ttl_ms, dead_max, ...)
  finish(qprefix, id, 'dead', now_ms, dead_ttl_ms, ...)
  redis.call('ZADD', dead, now_ms, id)
  redis.call('ZREMRANGEBYSCORE', dead, '-inf', tonumber(now_ms) - dead_ttl_ms)
  local excess = redis.call('ZCARD', dead) - dead_max
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', dead, 0, excess - 1)) do
      if redis.call('HGET', qprefix .. 'job:' .. old, 'status') == 'dead' then
        redis.call('DEL', qprefix .. 'job:' .. old, qprefix .. 'done:' .. old)
      end
    end
    redis.call('ZREMRANGEBYRANK', dead, 0, excess - 1)
  end
end

--[[ promote(queue, delayed, qprefix, now_ms): move the queue's due delayed jobs (at most 1000)
  to the tail of its queue, in due order. Used by promote.lua (the scheduler's timer) and by
  claim.lua (every claim promotes first); both include stale.lua before this (push_ready: an
  id that still has a stale entry takes it over).
  queue    the queue list (LIST)
  delayed  the delayed set (ZSET, score = due_ms)
  <qprefix>job:<id>  each promoted job's hash (HASH): status 'queued'
  <qprefix>stale     the queue's stale set (SET, includes/stale.lua)
  <qprefix>retrying  the index of the retrying jobs among the delayed (ZSET, ack.lua)
  Returns  when the earliest job still delayed falls due (its score as a string), or -1: none
  Invariant: an id leaves the delayed set in the same step that pushes it onto the queue, so
  concurrent promoters move each due job exactly once. ]]
local function promote(queue, delayed, qprefix, now_ms)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', delayed, id)
    redis.call('ZREM', qprefix .. 'retrying', id)  -- a retry leaves its index with the delayed set
    push_ready(queue, qprefix .. 'stale', id)
    redis.call('HSET', qprefix .. 'job:' .. id, 'status', 'queued', 'updated_ms', now_ms)
  end
  return redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2] or -1
end

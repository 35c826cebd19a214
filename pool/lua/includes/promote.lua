--[[ promote(queue, delayed, qprefix, now_ms, signal): move the queue's due delayed jobs, at most
  PROMOTE_SLICE of them, to the tail of its queue, in due order. Used by promote.lua (the
  scheduler's timer) and by claim.lua (every claim promotes first); both include stale.lua and
  signal.lua before this (push_ready: an id that still has a stale entry takes it over).
  signal   true: leave a ready token (includes/signal.lua) when due jobs moved; claim.lua passes
           false, it signals after its own claim if the queue still holds jobs
  queue    the queue list (LIST)
  delayed  the delayed set (ZSET, score = due_ms)
  <qprefix>job:<id>  each promoted job's hash (HASH): status 'queued'
  <qprefix>stale     the queue's stale set (SET, includes/stale.lua)
  <qprefix>ready     the queue's ready list (LIST, includes/signal.lua): one token when jobs moved
  <qprefix>retrying  the index of the retrying jobs among the delayed (ZSET, ack.lua)
  Returns  when the earliest job still delayed falls due (its score as a string), or -1: none.
           A time at or before now_ms means the slice was full and more are due: the caller
           calls again at once (the scheduler does), and each call holds Redis for one slice only.
  Slice: 100,000 jobs due at one instant, promoted 1,000 at a time with four calls a job, held
  Redis ~11 ms per call and kept PINGs above 20 ms for a second. Now the ZREM and the LPUSH take
  the whole slice in one call each and the stale set is asked only if it exists, leaving one
  HSET a job (~4 µs of the ~5.5 µs a job costs on the embedded server): a slice of 250 holds
  Redis ~1.4 ms (p50; 500 took ~3 ms, 1,000 ~6.5 ms).
  Invariant: an id leaves the delayed set in the same step that pushes it onto the queue, so
  concurrent promoters move each due job exactly once. ]]
local PROMOTE_SLICE = 250
local function promote(queue, delayed, qprefix, now_ms, signal)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, PROMOTE_SLICE)
  if #due > 0 then
    redis.call('ZREM', delayed, unpack(due))
    redis.call('ZREM', qprefix .. 'retrying', unpack(due))  -- a retry leaves its index with the delayed set
    local stale = qprefix .. 'stale'
    local ready = due
    if redis.call('EXISTS', stale) == 1 then
      ready = {}
      for _, id in ipairs(due) do
        if not drop_stale(stale, id) then
          ready[#ready + 1] = id  -- (else: it takes over its stale entry, as push_ready does)
        end
      end
    end
    if #ready > 0 then
      redis.call('LPUSH', queue, unpack(ready))  -- one by one, in due order, as single LPUSHes
    end
    for _, id in ipairs(due) do
      redis.call('HSET', qprefix .. 'job:' .. id, 'status', 'queued', 'updated_ms', now_ms)
    end
    if signal then
      signal_ready(qprefix .. 'ready')
    end
  end
  return redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2] or -1
end

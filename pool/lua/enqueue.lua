--[[ enqueue: create job records and push their ids onto the queue (or into the delayed set),
  skipping ids that exist.
  KEYS[1]        queue list of the jobs' queue (LIST)
  KEYS[2]        delayed set of the queue (ZSET, score = due_ms)
  KEYS[3]        stale set of the queue (SET, includes/stale.lua): a ready id that still has a
                 stale entry (its cancelled job's record expired, the entry not reached yet)
                 takes that entry over instead of getting a second one
  KEYS[4]        ready list of the queue (LIST, includes/signal.lua): one token when a job was
                 made ready (not for a delayed one)
  KEYS[5..n+4]   job hash of each job (HASH), in the same order as the jobs in ARGV
  ARGV[1]        now_ms (enqueued time)
  ARGV[2]        wake channel of the queue: told the due time when a delayed job becomes the
                 earliest, so that the scheduler promoting this queue re-arms its timer
  ARGV[3..]      per job: id, due_ms (0: run now), field count f, then f field/value pairs
  Returns        one reply per job: 1 created, or for an id that already exists (untouched) its
                 record as stored (HGETALL's field/value list), so that a resent batch is
                 answered in this one call instead of a read per existing id
  Invariant: an id is pushed onto the queue (or added to the delayed set) exactly when its hash
  is created, so enqueue is idempotent by id: a client retrying after a lost reply, or a second
  enqueue of a chosen job_id, never creates a second job. ]]
--@include stale
--@include signal
local queue, delayed, stale, ready_list = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now_ms, wake = ARGV[1], ARGV[2]
local earliest = tonumber(redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2])
local woken = nil
local created, ready = {}, {}
local at = 3
for i = 5, #KEYS do
  local job = KEYS[i]
  local id, due_ms = ARGV[at], tonumber(ARGV[at + 1])
  local field_count = tonumber(ARGV[at + 2])
  local first, last = at + 3, at + 2 + field_count * 2
  at = last + 1
  local stored = redis.call('HGETALL', job)
  if #stored > 0 then
    created[#created + 1] = stored
  else
    redis.call('HSET', job, 'enqueued_ms', now_ms, unpack(ARGV, first, last))
    if due_ms > tonumber(now_ms) then
      redis.call('HSET', job, 'status', 'delayed', 'due_ms', due_ms)
      redis.call('ZADD', delayed, due_ms, id)
      if (not earliest or due_ms < earliest) and (not woken or due_ms < woken) then
        woken = due_ms
      end
    else
      ready[#ready + 1] = id
    end
    created[#created + 1] = 1
  end
end
if #ready > 0 then
  signal_ready(ready_list)  -- (an id taking over a stale entry is claimable too)
end
if #ready > 0 and redis.call('EXISTS', stale) == 1 then
  local fresh = {}
  for _, id in ipairs(ready) do
    if not drop_stale(stale, id) then
      fresh[#fresh + 1] = id
    end
  end
  ready = fresh
end
-- one LPUSH per 1000 ready ids (as many single LPUSHes would leave them; unpack's limit is ~8000)
for first = 1, #ready, 1000 do
  redis.call('LPUSH', queue, unpack(ready, first, math.min(first + 999, #ready)))
end
if woken then
  redis.call('PUBLISH', wake, woken)
end
return created

--[[ claim: promote due jobs, then take up to k ready jobs into a worker's running set and mark
  them active, in one step, within the queue's rate limit.
  KEYS[1]  queue list (LIST)
  KEYS[2]  landing list of this worker for this queue (LIST, '<prefix>:{q}:active:<worker>'):
           ids its BLMOVE moved that no claim has started yet
  KEYS[3]  delayed set of the queue (ZSET, score = due_ms): due jobs move to the queue first
  KEYS[4]  rate window of the queue (ZSET, score = server time in ms a job started)
  KEYS[5]  running set of this worker for this queue (ZSET, score = started_ms, plus i/1024 for
           the i-th job one call starts: a batch keeps its queue order, as requeue gives it
           back): every job it has started and not acknowledged
  ARGV[1]  key prefix of this queue ('<prefix>:{q}:'; the same hash tag as KEYS)
  ARGV[2]  worker id
  ARGV[3]  now_ms
  ARGV[4]  k: how many more ids to move from the queue (0 allowed)
  ARGV[5]  how many jobs the worker's process runs right now
  ARGV[6]  solo_at: deliveries from which a job runs alone (see below)
  ARGV[7]  result TTL in ms (for a job finished as cancelled here; the job's own TTL wins)
  ARGV[8]  rate limit: at most this many job starts per window (0: no limit)
  ARGV[9]  rate window in ms
  ARGV[10] recent_max: how many ids the queue's 'recent:cancelled' list keeps
  ARGV[11] optional: an id already in the landing list (moved by BLMOVE, or found by reconcile)
           to be started first, or in the running set (started, its reply lost: found by
           reconcile, its record is sent again); ignored unless it is still in one of them
           ('' for none)
  ARGV[12] optional: 'head' to start the id at the head of the landing list. Sent in one
           pipeline right after the watcher's BLMOVE (which pushes onto that head, and is the
           only push there): the job starts without a second round trip. If the BLMOVE timed
           out, the head is an id an earlier claim never started (its reply lost), or nothing;
           that id starts, and the caller runs what the reply holds. now_ms is then the
           server's clock (the call was written when the BLMOVE began, possibly seconds earlier).
  A job whose cancellation was requested (cancel_requested_ms) is finished as 'cancelled' here
  instead of being started: a request made while it ran and its worker died is never lost.
  Stale entries (jobs cancel.lua finished while they waited, their ids left in place: see
  includes/stale.lua) are dropped as they are met, from the queue or as the moved id, and the
  claim goes on to the next ids: nothing starts for them, nothing is counted and the rate limit
  is untouched. At most SKIP_MAX are dropped per call (bounded script time); a claim that
  stopped there has filled fewer slots, and the next claim goes on.
  Rate limit: a sliding window judged on the server's clock (TIME), so every worker of every host
  counts against one window. Over the limit nothing starts: a moved id goes back to the head of
  the queue, and the reply says how long until the window has room. Redelivered ids found by
  reconcile (already started once) are not counted again.
  Returns  {next_due_ms, claimed, wait_ms}: when the earliest delayed job falls due (-1: none);
           in claimed one array per claimed job: the job hash as HGETALL pairs (status 'active',
           attempts and deliveries counted up by one), plus 'solo','1' for a redelivered job;
           {'id', <id>, 'missing', '1'} for an id whose record is gone (dropped from the list);
           {'solo_wait', '1'} when the next job is a suspect one and the process is busy;
           wait_ms > 0 when the rate limit held jobs back (try again after that long).
  Chain signal: after its claim, if the queue still holds jobs and the rate limit did not stop
  the claim, one ready token is left (<qprefix>ready, includes/signal.lua), so the next process
  waiting on the queue claims the rest: one token wakes one process, no thundering herd.
  Suspect jobs (deliveries >= solo_at: workers died holding them that often) run alone: only
  a process with nothing running claims one, and it claims nothing else with it. Deaths from
  then on are counted against the job alone, so a poison job never takes its batch-mates to the
  dead set with it (solo_at < max_deliveries), while one crash costs no throughput (solo_at 2).
  Cost: O(log n) per started job in the n jobs the worker runs (ZADD; the landing list holds at
  most one id per watched queue), never a scan of the running set.
  Invariant: each id leaves the queue (or the landing list) in the same atomic step that puts it
  in the running set (the script's effects are applied and persisted as one), so each id is in
  exactly one place. Job hashes are built as ARGV[1] .. 'job:' .. id: they carry the queue's hash
  tag, in the same slot as KEYS. ]]
--@include finish
--@include stale
--@include signal
--@include promote
local queue, landing, delayed, rate, running_set = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local qprefix, worker, now_ms = ARGV[1], ARGV[2], ARGV[3]
local k, running, solo_at, ttl_ms = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local rate_max, rate_ms, recent_max, moved = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
if moved == '' then
  moved = nil
end
local stale = qprefix .. 'stale'
local SKIP_MAX = 1000
if ARGV[12] == 'head' then
  local time = redis.call('TIME')
  now_ms = tostring(tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
  moved = redis.call('LINDEX', landing, 0) or nil
end

local next_due = promote(queue, delayed, qprefix, now_ms, false)

-- Where the moved id is: 'landing' (moved, not started), 'running' (started: reconcile), or nil.
local moved_in = nil
if moved and redis.call('LPOS', landing, moved) then
  moved_in = 'landing'
elseif moved and redis.call('ZSCORE', running_set, moved) then
  moved_in = 'running'
else
  -- A claim that arrives late (held up by a partition after its client gave up) names an id
  -- that was acknowledged or requeued meanwhile: starting it would resurrect a finished job.
  moved = nil
end
if moved_in == 'landing' and drop_stale(stale, moved) then
  redis.call('LREM', landing, 1, moved)  -- cancelled while it waited: dropped, never started
  moved = nil
end

-- Take id out of where it was: the landing list (LREM of a list of at most a few ids), the
-- running set, or nowhere ('queue': the RPOP that took it is done).
local function leave(id, from)
  if from == 'landing' then
    redis.call('LREM', landing, 1, id)
  elseif from == 'running' then
    redis.call('ZREM', running_set, id)
  end
end

local server_ms, room = 0, nil
if rate_max > 0 then
  local time = redis.call('TIME')
  server_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', rate, '-inf', server_ms - rate_ms)
  room = rate_max - redis.call('ZCARD', rate)
  local fresh_moved = moved and redis.call('HGET', qprefix .. 'job:' .. moved, 'status') ~= 'active'
  if room <= 0 and (fresh_moved or (k > 0 and redis.call('LLEN', queue) > 0)) then
    local oldest = tonumber(redis.call('ZRANGE', rate, 0, 0, 'WITHSCORES')[2]) or server_ms
    if fresh_moved then
      leave(moved, moved_in)
      redis.call('RPUSH', queue, moved)  -- back at the head: the next to start when there is room
    end
    return {next_due, {}, math.max(1, oldest + rate_ms - server_ms)}
  end
end

local claimed = {}
-- A job's record is read once (HGETALL) and the reply built from it: three calls per claimed
-- job (HGETALL, ZADD, HSET) whatever the record holds.
local function read(id)
  local record = redis.call('HGETALL', qprefix .. 'job:' .. id)
  local fields = {}
  for i = 1, #record, 2 do
    fields[record[i]] = i + 1  -- where each field's value is in the record
  end
  return record, fields
end
local function field(record, fields, name)
  local at = fields[name]
  return at and record[at]
end
local function set(record, fields, name, value)
  local at = fields[name]
  if at then
    record[at] = value
  else
    record[#record + 1] = name
    record[#record + 1] = value
    fields[name] = #record
  end
end
local function redelivered(record, fields)
  return (tonumber(field(record, fields, 'deliveries')) or 0) >= solo_at
end
-- Start id, taken from `from` (see leave): into the running set, unless its record is gone or
-- its cancellation was requested (then it is only taken out).
local function start(id, solo, record, fields, from)
  local job = qprefix .. 'job:' .. id
  if #record == 0 then
    leave(id, from)
    claimed[#claimed + 1] = {'id', id, 'missing', '1'}
    return
  end
  if fields['cancel_requested_ms'] then
    leave(id, from)
    local ttl = tonumber(field(record, fields, 'result_ttl_ms')) or ttl_ms
    finish_cancelled(qprefix, qprefix .. 'stats', id, now_ms, ttl, recent_max)
    return
  end
  if not (field(record, fields, 'status') == 'active' and field(record, fields, 'worker') == worker) then
    -- (else: started before, and the reply was lost: the same record again)
    local attempts = tostring((tonumber(field(record, fields, 'attempts')) or 0) + 1)
    local deliveries = tostring((tonumber(field(record, fields, 'deliveries')) or 0) + 1)
    redis.call('HSET', job, 'status', 'active', 'started_ms', now_ms, 'updated_ms', now_ms, 'worker', worker,
      'attempts', attempts, 'deliveries', deliveries)
    set(record, fields, 'status', 'active')
    set(record, fields, 'started_ms', now_ms)
    set(record, fields, 'updated_ms', now_ms)
    set(record, fields, 'worker', worker)
    set(record, fields, 'attempts', attempts)
    set(record, fields, 'deliveries', deliveries)
    if room then
      room = room - 1
      redis.call('ZADD', rate, server_ms, id .. ':' .. attempts)
      redis.call('PEXPIRE', rate, rate_ms)
    end
  end
  if from ~= 'running' then  -- (one reconcile found there stays as it is)
    leave(id, from)
    local started_ms = tonumber(field(record, fields, 'started_ms')) or tonumber(now_ms)
    redis.call('ZADD', running_set, started_ms + #claimed / 1024, id)
  end
  if solo then
    record[#record + 1] = 'solo'
    record[#record + 1] = '1'
  end
  claimed[#claimed + 1] = record
end

if moved then
  local record, fields = read(moved)
  local again = redelivered(record, fields) and field(record, fields, 'status') ~= 'active'
  if again and running > 0 then
    leave(moved, moved_in)
    redis.call('RPUSH', queue, moved)  -- back at the head, for a process with nothing running
    signal_ready(qprefix .. 'ready')
    return {next_due, {{'solo_wait', '1'}}, 0}
  end
  start(moved, again, record, fields, moved_in)
  if again then
    if redis.call('LLEN', queue) > 0 then
      signal_ready(qprefix .. 'ready')
    end
    return {next_due, claimed, 0}
  end
end
if room then
  k = math.min(k, math.max(room, 0))
end
-- Up to k ids from the head of the queue, head first, into take: stale entries met on the way are
-- dropped; a suspect (redelivered) job ends the run, and is taken alone if nothing else is.
-- Each round reads the ids it still needs (LRANGE), then takes the ones it went through off the
-- queue in one RPOP: the same result as single LMOVEs, in fewer calls.
local function take_heads(take)
  local any_stale = redis.call('EXISTS', stale) == 1
  local dropped, solo = 0, false
  while #take < k and dropped < SKIP_MAX do
    local want = k - #take
    local heads = redis.call('LRANGE', queue, -want, -1)
    local used, ended = 0, false
    for i = #heads, 1, -1 do
      local id = heads[i]
      if any_stale and drop_stale(stale, id) then
        dropped = dropped + 1
      else
        local record, fields = read(id)
        if redelivered(record, fields) then
          ended = true
          if #claimed == 0 and #take == 0 and running == 0 then
            take[1], solo = {id, record, fields}, true
            used = used + 1
          elseif #claimed == 0 and #take == 0 then
            claimed[1] = {'solo_wait', '1'}
          end
          break
        end
        take[#take + 1] = {id, record, fields}
      end
      used = used + 1
      if dropped >= SKIP_MAX then
        break
      end
    end
    if used > 0 then
      redis.call('RPOP', queue, used)
    end
    if ended or #heads < want then
      break
    end
  end
  return solo
end

if k > 0 then
  local take = {}
  local solo = take_heads(take)
  for _, taken in ipairs(take) do
    start(taken[1], solo, taken[2], taken[3], 'queue')
  end
end
if room and room <= 0 and redis.call('LLEN', queue) > 0 then
  local oldest = tonumber(redis.call('ZRANGE', rate, 0, 0, 'WITHSCORES')[2]) or server_ms
  return {next_due, claimed, math.max(1, oldest + rate_ms - server_ms)}
end
if redis.call('LLEN', queue) > 0 then
  signal_ready(qprefix .. 'ready')  -- more for the next process (the rate limit returned above)
end
return {next_due, claimed, 0}

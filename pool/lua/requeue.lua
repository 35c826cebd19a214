--[[ requeue: give a worker's claimed jobs (its landing list and running set) back to the queue;
  the one script for stop, death and
  reclaim, so that all three count deliveries and bury poison jobs the same way.
  KEYS[1]  landing list of the worker (LIST, '<prefix>:{q}:active:<worker>'): ids its BLMOVE
           moved and no claim started; a worker of an earlier pool version kept its started
           jobs here too, and they are given back the same way
  KEYS[2]  queue list (LIST)
  KEYS[3]  dead set of the queue (ZSET, score = now_ms)
  KEYS[4]  stats hash of the queue (HASH): 'reclaimed' and 'dead' totals
  KEYS[5]  per-queue worker registry of pool versions before the sorted one (SET; see KEYS[7])
  KEYS[6]  the worker's liveness key in this queue (STRING with PX TTL)
  KEYS[7]  per-queue worker registry (ZSET, score = liveness deadline: heartbeat.lua)
  ARGV[1]  key prefix of this queue ('<prefix>:{q}:'; job and done keys are built from it and
           carry the same hash tag as KEYS, so they live in the same Cluster slot)
  ARGV[2]  mode: 'stop'    the worker stopped cleanly and hands its jobs back: the delivery
                           does not count (deliveries - 1)
                 'died'    its supervisor saw it die: the delivery counts; a job delivered
                           max_deliveries times goes to the dead set instead of the queue
                 'reclaim' as 'died', for a worker found dead because its liveness key expired
                           (expired.lua); only if the key is gone and this caller is the one
                           that unregisters it (from either registry)
  ARGV[3]  max_deliveries
  ARGV[4]  now_ms
  ARGV[5]  worker id
  ARGV[6]  dead-letter TTL in ms (buried jobs are kept this long; older dead ids are dropped)
  ARGV[7]  channel for a 'dead' event per buried job, or '' (events off)
  ARGV[8]  how the worker died, as its supervisor saw it ('killed by SIGSEGV', 'exited with code
           3', ...; '' in 'stop' mode). In 'died' and 'reclaim' modes it is appended to the
           'deaths' field (a JSON array) of each job the worker had started, keeping as many
           entries as the job has deliveries (an ack resets those to 0), and a buried job's
           error names them: a poison job says how it killed its workers.
  KEYS[8]  running set of the worker (ZSET, score = started_ms: claim.lua), emptied after the
           landing list, newest first
  ARGV[9]  dead_max: the most dead jobs kept in this queue (the oldest are deleted)
  A stale entry (a job cancel.lua finished while it waited, moved by a BLMOVE whose claim never
  ran: includes/stale.lua) is dropped, not requeued: it is finished already.
  Only started jobs (status 'active') are buried: an id a BLMOVE moved whose claim never ran
  had no delivery counted, and is requeued whatever its count.
  Ready token: in every mode, when the queue holds jobs afterwards, one token is left in the
  queue's ready list (<qprefix>ready, includes/signal.lua): the jobs given back, and a token the
  worker may have popped and not honoured before it stopped or died, wake a waiting process.
  Returns  {requeued, buried}; for 'reclaim' also a RequeueCode (pool/lua/codes.py):
           WORKER_ALIVE (its liveness key exists), ALREADY_RECLAIMED (another caller reclaimed it
           first: it is no longer registered)
  A poison job is buried as ack.lua buries a dead one (includes/finish.lua bury): the dead-letter
  TTL and dead_max hold for both.
  Invariants: each id moves with LMOVE, LPOP+ZADD or ZREM+RPUSH in this one step, never held in
  memory; the oldest started job ends up next in line; in 'reclaim' only the caller whose ZREM
  (or, for a worker of an earlier version, SREM) removes the worker moves its jobs, so concurrent reclaimers requeue each job exactly once. Expiry is judged by
  Redis (the key's TTL), never by comparing the clocks of different hosts. ]]
--@include codes
--@include finish
--@include stale
--@include signal
local landing, queue, dead, stats, legacy, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local registry, running_set = KEYS[7], KEYS[8]
local qprefix, mode, max_deliveries, now_ms, worker = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local dead_ttl, channel, cause, dead_max = tonumber(ARGV[6]), ARGV[7], ARGV[8] or '', tonumber(ARGV[9])

if mode == 'reclaim' then
  if redis.call('EXISTS', alive) == 1 then
    return RequeueCode.WORKER_ALIVE
  end
  if redis.call('ZREM', registry, worker) + redis.call('SREM', legacy, worker) == 0 then
    return RequeueCode.ALREADY_RECLAIMED
  end
else
  redis.call('ZREM', registry, worker)
  redis.call('SREM', legacy, worker)
  redis.call('DEL', alive)
end
redis.call('DEL', qprefix .. 'cancel:' .. worker)  -- its jobs' cancel requests live on in their records

-- Append this death to the job's record; returns the deaths it has (the last `deliveries`).
local function record_death(job, deliveries)
  local deaths = cjson.decode(redis.call('HGET', job, 'deaths') or '[]')
  deaths[#deaths + 1] = cause ~= '' and cause or 'died'
  while #deaths > math.max(deliveries, 1) do
    table.remove(deaths, 1)
  end
  redis.call('HSET', job, 'deaths', cjson.encode(deaths))
  return deaths
end

-- 'killed by SIGSEGV (3 times), exited with code 1': each cause once, in the order first seen.
local function summary(deaths)
  local order, counts = {}, {}
  for _, death in ipairs(deaths) do
    if not counts[death] then
      order[#order + 1] = death
      counts[death] = 0
    end
    counts[death] = counts[death] + 1
  end
  local parts = {}
  for i, death in ipairs(order) do
    parts[i] = counts[death] > 1 and (death .. ' (' .. counts[death] .. ' times)') or death
  end
  return table.concat(parts, ', ')
end

local requeued, buried = 0, 0

-- Give back one id, met at the head of the landing list (from 'list') or in the running set
-- ('set'): dropped if its entry is stale, buried if it is poison, else pushed onto the queue.
local function give_back(id, from)
  local job = qprefix .. 'job:' .. id
  local deliveries = tonumber(redis.call('HGET', job, 'deliveries') or '0')
  local started = mode ~= 'stop' and redis.call('HGET', job, 'status') == 'active'
  local deaths = started and record_death(job, deliveries)
  local function take()
    if from == 'list' then
      redis.call('LPOP', landing)
    else
      redis.call('ZREM', running_set, id)
    end
  end
  if not started and drop_stale(qprefix .. 'stale', id) then
    take()
  elseif started and deliveries >= max_deliveries then
    local reason = 'PoisonJob: delivered ' .. deliveries .. ' times and its worker died each time ' ..
      'before acknowledging it (max_deliveries is ' .. max_deliveries .. '); how its workers died: ' ..
      summary(deaths)
    take()
    redis.call('HDEL', job, 'traceback', 'result')  -- an earlier attempt's traceback is not this death's
    bury(qprefix, dead, id, now_ms, dead_ttl, dead_max, 'error', reason)
    if channel ~= '' then
      redis.call('PUBLISH', channel, cjson.encode({id = id, status = 'dead', error = reason,
        handler = redis.call('HGET', job, 'handler'), ts_ms = tonumber(now_ms)}))
    end
    buried = buried + 1
  else
    if from == 'list' then
      redis.call('LMOVE', landing, queue, 'LEFT', 'RIGHT')
    else
      redis.call('ZREM', running_set, id)
      redis.call('RPUSH', queue, id)
    end
    if redis.call('EXISTS', job) == 1 then
      redis.call('HSET', job, 'status', 'queued', 'updated_ms', now_ms)
      if mode == 'stop' and deliveries > 0 then
        redis.call('HINCRBY', job, 'deliveries', -1)
      end
    end
    requeued = requeued + 1
  end
end

while true do
  local id = redis.call('LINDEX', landing, 0)
  if not id then
    break
  end
  give_back(id, 'list')
end
-- Newest first, each pushed onto the head of the queue: the oldest started job is next in line.
while true do
  local newest = redis.call('ZRANGE', running_set, -1, -1)[1]
  if not newest then
    break
  end
  give_back(newest, 'set')
end
if buried > 0 then
  redis.call('HINCRBY', stats, 'dead', buried)
end
if requeued > 0 and mode ~= 'stop' then
  redis.call('HINCRBY', stats, 'reclaimed', requeued)
end
if redis.call('LLEN', queue) > 0 then
  signal_ready(qprefix .. 'ready')
end
return {requeued, buried}

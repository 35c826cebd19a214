--[[ fire: enqueue the job of one schedule tick, exactly once however many schedulers try it.
  KEYS[1]  schedule state (HASH): last_ms (the latest tick fired), job_id, fired_ms
  KEYS[2]  queue list of the schedule's queue (LIST)
  KEYS[3]  job hash of this tick's job (HASH)
  KEYS[4]  stale set of the queue (SET, includes/stale.lua)
  KEYS[5]  ready list of the queue (LIST, includes/signal.lua): one token when the job is enqueued
  ARGV[1]  tick_ms: the time the tick is for (cron or interval time, not when it runs)
  ARGV[2]  now_ms
  ARGV[3]  job id (derived from the schedule's name and tick_ms)
  ARGV[4..] field/value pairs of the job hash
  Returns  1 enqueued; 0 this tick, or a later one, was fired already (by another supervisor,
           or before a restart): nothing is written
  Invariant: last_ms only grows, and a tick's job is created in the same step that moves
  last_ms past it, so each tick is enqueued at most once, across supervisors and restarts. ]]
--@include stale
--@include signal
local state, queue, job, stale, ready = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local tick_ms, now_ms, id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local last = tonumber(redis.call('HGET', state, 'last_ms') or '-1')
if tick_ms <= last then
  return 0
end
redis.call('HSET', state, 'last_ms', tick_ms, 'job_id', id, 'fired_ms', now_ms)
if redis.call('EXISTS', job) == 0 then
  redis.call('HSET', job, 'enqueued_ms', now_ms, unpack(ARGV, 4))
  push_ready(queue, stale, id)
  signal_ready(ready)
end
return 1

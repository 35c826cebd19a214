--[[ retry_dead: send a dead job back to its queue for a fresh run, keeping its id and history.
  KEYS[1]  dead set (ZSET)   KEYS[2]  queue list (LIST)   KEYS[3]  job hash (HASH)
  KEYS[4]  done list of the job (LIST)   KEYS[5]  stale set of the queue (SET, includes/stale.lua)
  KEYS[6]  ready list of the queue (LIST, includes/signal.lua): one token when the job went back
  ARGV[1]  job id   ARGV[2]  now_ms
  Returns  1 sent back; 0 not in the dead set, or its record is gone or no longer dead (a stale id
           left after the dead-letter TTL, whose id may since have been enqueued again)
  Invariant: the id leaves the dead set exactly when it joins the queue; attempts and
  deliveries restart from 0, the last error and the attempt history stay for the record. ]]
--@include stale
--@include signal
local dead, queue, job, done, stale, ready = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, now_ms = ARGV[1], ARGV[2]
if redis.call('ZREM', dead, id) == 0 then
  return 0
end
if redis.call('HGET', job, 'status') ~= 'dead' then
  return 0
end
redis.call('HSET', job, 'status', 'queued', 'attempts', 0, 'deliveries', 0, 'failures', 0,
  'updated_ms', now_ms, 'enqueued_ms', now_ms, 'revived_ms', now_ms)
redis.call('HDEL', job, 'finished_ms', 'due_ms', 'result')
redis.call('PERSIST', job)
redis.call('DEL', done)
push_ready(queue, stale, id)
signal_ready(ready)
return 1

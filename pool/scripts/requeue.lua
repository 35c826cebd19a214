--[[ requeue: put every job of a worker's active list back at the head of its queue.
  KEYS[1]  active list of the worker (LIST)
  KEYS[2]  queue list (LIST)
  ARGV[1]  job hash key prefix of this queue ('<prefix>:{q}:job:'; same hash tag as KEYS)
  Returns  the number of ids moved
  Invariant: each id moves with LMOVE (never held only in memory); the oldest claim ends up
  next in line, so requeued jobs run before anything enqueued after them. ]]
local active, queue, job_prefix = KEYS[1], KEYS[2], ARGV[1]
local moved = 0
while true do
  local id = redis.call('LMOVE', active, queue, 'LEFT', 'RIGHT')
  if not id then
    break
  end
  local job = job_prefix .. id
  if redis.call('EXISTS', job) == 1 then
    redis.call('HSET', job, 'status', 'queued')
  end
  moved = moved + 1
end
return moved

--[[ claim: take up to k ready jobs into a worker's active list and mark them active, in one step.
  KEYS[1]  queue list (LIST)
  KEYS[2]  active list of this worker for this queue (LIST)
  ARGV[1]  key prefix of this queue ('<prefix>:{q}:'; the same hash tag as KEYS)
  ARGV[2]  worker id
  ARGV[3]  now_ms
  ARGV[4]  k: how many more ids to move from the queue (0 allowed)
  ARGV[5]  optional: an id that BLMOVE already moved into the active list, to be started first
  Returns  one array per claimed job: the job hash as HGETALL pairs (with status 'active',
           attempts and deliveries each counted up by one),
           or {'id', <id>, 'missing', '1'} for an id whose record is gone (dropped from the list)
  Invariant: ids move queue -> active with LMOVE, never through the script's memory only, so a
  crash at any point leaves each id in exactly one list.
  Job hashes are built as ARGV[1] .. 'job:' .. id: they carry the queue's hash tag, so they live
  in the same Cluster slot as KEYS[1] and KEYS[2]. ]]
local queue, active = KEYS[1], KEYS[2]
local qprefix, worker, now_ms, k = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local claimed = {}
local function start(id)
  local job = qprefix .. 'job:' .. id
  if redis.call('EXISTS', job) == 0 then
    redis.call('LREM', active, 1, id)
    claimed[#claimed + 1] = {'id', id, 'missing', '1'}
    return
  end
  redis.call('HSET', job, 'status', 'active', 'started_ms', now_ms, 'worker', worker)
  redis.call('HINCRBY', job, 'attempts', 1)
  redis.call('HINCRBY', job, 'deliveries', 1)
  claimed[#claimed + 1] = redis.call('HGETALL', job)
end

if ARGV[5] then
  start(ARGV[5])
end
for _ = 1, k do
  local id = redis.call('LMOVE', queue, active, 'RIGHT', 'LEFT')
  if not id then
    break
  end
  start(id)
end
return claimed

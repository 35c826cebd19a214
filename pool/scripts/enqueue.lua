--[[ enqueue: create job records and push their ids onto the queue, skipping ids that exist.
  KEYS[1]        queue list of the jobs' queue (LIST)
  KEYS[2..n+1]   job hash of each job (HASH), in the same order as the jobs in ARGV
  ARGV[1]        now_ms (enqueued time)
  ARGV[2..]      per job: id, field count f, then f field/value pairs
  Returns        one integer per job: 1 created and queued, 0 an id that already exists (untouched)
  Invariant: an id is pushed onto the queue exactly when its hash is created, so enqueue is
  idempotent by id: a client retrying after a lost reply never creates a second job. ]]
local queue = KEYS[1]
local now_ms = ARGV[1]
local created = {}
local at = 2
for i = 2, #KEYS do
  local job = KEYS[i]
  local id = ARGV[at]
  local field_count = tonumber(ARGV[at + 1])
  local first, last = at + 2, at + 1 + field_count * 2
  at = last + 1
  if redis.call('EXISTS', job) == 1 then
    created[#created + 1] = 0
  else
    redis.call('HSET', job, 'enqueued_ms', now_ms, unpack(ARGV, first, last))
    redis.call('LPUSH', queue, id)
    created[#created + 1] = 1
  end
end
return created

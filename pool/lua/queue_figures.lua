--[[ queue_figures: everything `pool status` shows of one queue, in one call (read only).
  KEYS[1]  queue list (LIST; its head, the next to start, is the right end)
  KEYS[2]  stale set of the queue (SET: entries of cancelled jobs still in the list)
  KEYS[3]  stats hash of the queue (HASH: completed, failed, reclaimed)
  KEYS[4]  dead set of the queue (ZSET)
  KEYS[5]  delayed set of the queue (ZSET)
  KEYS[6]  worker registry of the queue (ZSET, score = liveness deadline in server ms)
  KEYS[7]  per-minute totals of the queue (HASH: c<minute>, f<minute>)
  KEYS[8]  per-second tally of the minute before this one (HASH: c<s>, f<s>)
  KEYS[9]  per-second tally of the minute an hour before this one
  ARGV[1]  key prefix of this queue ('<prefix>:{q}:'; the head's job hash is built from it)
  ARGV[2]  registry cutoff in server ms: workers whose deadline is before it are returned
  ARGV[3]  first second of the tallies to read (status_queues.boundary_fields)
  ARGV[4]  last second of the tallies to read (an empty range when it is below ARGV[3])
  Returns  {queue length, stale count, stats pairs, dead count, delayed count, expiring workers,
           totals pairs, the tally fields of KEYS[8] then of KEYS[9] (c<first>..c<last>,
           f<first>..f<last>; false where nothing was counted), the head job's status,
           updated_ms, enqueued_ms, due_ms, started_ms (empty when the queue is empty; the head is
           the next job that is not a cancelled one's stale entry)}
  Why a script: a fixed number of commands per queue, run where the keys are, so a status of
  1,000 queues is 1,000 calls instead of 10,000 (the cost is the client's, per command). Not
  for atomicity; reading the head and its record in one step means the oldest wait is that of
  the job at the head, never of one a worker took between two round trips. Every key is in the
  queue's hash slot. Where scripts are not allowed (a read-only ACL user) or not pipelined (a
  Cluster), status_queues.py sends the same reads as plain commands. ]]
local queue, stale, stats, dead, delayed, registry, minutes, previous, hour_ago =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local qprefix, cutoff_ms, first, last = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])

local fields = {}
for _, kind in ipairs({'c', 'f'}) do
  for second = first, last do
    fields[#fields + 1] = kind .. second
  end
end
local function tally(key)
  if #fields == 0 then
    return {}
  end
  return redis.call('HMGET', key, unpack(fields))
end

-- The head: the first entry from the right that is not a cancelled job's (stale) one, among the
-- next STALE_SCAN (a cancelled job at the head would hide the wait of the jobs behind it).
local STALE_SCAN = 16
local head = nil
for at = -1, -STALE_SCAN, -1 do
  local id = redis.call('LINDEX', queue, at)
  if not id or redis.call('SISMEMBER', stale, id) == 0 then
    head = id
    break
  end
end
local head_fields = {}
if head then
  head_fields = redis.call('HMGET', qprefix .. 'job:' .. head, 'status', 'updated_ms', 'enqueued_ms', 'due_ms',
    'started_ms')
end
return {redis.call('LLEN', queue), redis.call('SCARD', stale), redis.call('HGETALL', stats),
  redis.call('ZCARD', dead), redis.call('ZCARD', delayed), redis.call('ZRANGEBYSCORE', registry, '-inf', cutoff_ms),
  redis.call('HGETALL', minutes), tally(previous), tally(hour_ago), head_fields}

--[[ purge: delete a dead job for good.
  KEYS[1]  dead set (ZSET)   KEYS[2]  job hash (HASH)   KEYS[3]  done list of the job (LIST)
  ARGV[1]  job id
  Returns  1 purged; 0 not in the dead set, or not dead any more (a stale id: only the id goes)
  Invariant: only dead jobs are deleted; a job sent back or enqueued again under that id is left alone. ]]
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if redis.call('HGET', KEYS[2], 'status') ~= 'dead' then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3])
return 1

--[[ read_fields: the same fields of many hashes, in one call (read only).
  KEYS     hashes (supervisors or workers: a few hundred per call)
  ARGV     the fields to read of each
  Returns  one HMGET reply per key, in KEYS order (all false for a missing key)
  Why a script: `pool status` reads one hash per worker; 10,000 HMGETs cost the client ~20 µs
  each in redis-py, the server ~2 µs. A call per a few hundred keys keeps the server's time per
  call around a millisecond. Not for atomicity. Keys in several hash slots: not on a Cluster
  (status.py sends a pipeline of HMGETs there). ]]
local replies = {}
for i, key in ipairs(KEYS) do
  replies[i] = redis.call('HMGET', key, unpack(ARGV))
end
return replies

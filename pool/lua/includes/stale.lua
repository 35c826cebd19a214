--[[ stale: queue entries that cancel.lua left behind. Cancelling a queued job finishes it at once
  but leaves its id where it is in the queue list: taking it out (LREM) would scan the list, and
  block Redis for as long as the queue is deep. The id goes into the queue's stale set instead,
  and whoever next meets that entry (claim, handback, requeue) drops it instead of starting it.
  Rejected: a per-entry token in the list (ids would no longer be the list's members, and
  BLMOVE, listings and every script read them as ids); tombstones judged by the record alone (an
  id enqueued again after its cancelled record expired would have two entries, one of them stale
  and indistinguishable from the live one).
  <qprefix>stale  (SET) ids whose one entry (in the queue list, or moved by BLMOVE into a
                  worker's landing list and not started yet) belongs to a finished job and is to be dropped
  Invariant: an id has at most one entry across the queue and the landing lists. An id pushed
  while it is stale takes over its old entry (push_ready) instead of getting a second one, so a
  stale mark always names the entry it meets, and a job cancelled while waiting never runs. ]]

--[[ drop_stale(stale, id): whether the entry of id just met is stale; the mark is used up (the
  caller drops the entry in the same script). ]]
local function drop_stale(stale, id)
  return redis.call('SREM', stale, id) == 1
end

--[[ push_ready(queue, stale, id): id is ready to run: pushed onto the tail of the queue, unless
  it still has a stale entry (its earlier job was cancelled while waiting and the entry not yet
  reached), which it takes over: it then starts from that entry's place, earlier than a push
  would put it. ]]
local function push_ready(queue, stale, id)
  if not drop_stale(stale, id) then
    redis.call('LPUSH', queue, id)
  end
end

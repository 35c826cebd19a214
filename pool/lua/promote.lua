--[[ promote: move a queue's due delayed jobs (retries, delays) into its queue, in one step. The
  scheduler runs it when the earliest due time it knows of has come; every claim promotes too.
  KEYS[1]  queue list (LIST)
  KEYS[2]  delayed set of the queue (ZSET, score = due_ms)
  ARGV[1]  key prefix of the queue ('<prefix>:{q}:'; job hashes are built from it, same hash tag)
  ARGV[2]  now_ms
  <qprefix>ready  the queue's ready list (LIST, includes/signal.lua): one token when jobs moved
  Returns  when the earliest job still delayed falls due, or -1: none
  Invariant: each due id leaves the delayed set exactly when it joins the queue (includes/promote.lua). ]]
--@include stale
--@include signal
--@include promote
local queue, delayed = KEYS[1], KEYS[2]
local qprefix, now_ms = ARGV[1], ARGV[2]
return promote(queue, delayed, qprefix, now_ms, true)

--[[ signal: leave a ready token for a queue (includes/signal.lua): a worker process that popped
  one and cannot claim (every job slot busy, or it is stopping) gives it back, so that another
  process waiting on the queue takes the jobs; and a lost token can be replaced.
  KEYS[1]  ready list of the queue (LIST, '<prefix>:{q}:ready'): at most one token
  Returns  1
  Invariant: the ready list holds at most one token. ]]
--@include signal
signal_ready(KEYS[1])
return 1

"""The supervisor's Redis chores: requeue the jobs of dead workers, reclaim expired ones, watch
that Redis kept its data, and announce the supervisor itself (what `pool status` and
`pool health` read: its state and which workers it runs).

Everything here is synchronous and runs from the supervisor's loop (≤ 1 s tick), so it needs no
thread or event loop across fork. Errors that mean "Redis is unreachable" are absorbed and
retried on the next tick; they are logged once per outage.

Reclaiming waits one heartbeat TTL after this supervisor's own outage ends: while it was cut
off, every heartbeat looked stale from where it stood, and the workers need a moment to renew.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import redis
import redis.cluster
from redis.exceptions import ResponseError

from pool import clock
from pool.config import Config
from pool.config_values import redact_url
from pool.connection import (
    CONNECTION,
    OUTAGE_ERRORS,
    Outage,
    describe_error,
    is_refusal,
    server_info,
    sync_client,
)
from pool.keys import Keys
from pool.lua import RequeueCode, Scripts

logger = logging.getLogger("pool.housekeeping")  # the name JSON logs show, kept stable

PRESENCE_SLACK_S = 2.0
EVICTION_REPORT_S = 60.0
# What a reclaimed worker's jobs record as its death: nobody saw it die, its heartbeat stopped.
# Expired workers asked for per script call: bounds its time (one PTTL each); a full batch is
# followed by another in the same pass.
EXPIRED_BATCH = 500
EXPIRED_CAUSE = "stopped heartbeating (host lost, supervisor killed, or its event loop froze)"


class Housekeeper:
    """Redis-side upkeep of one supervisor.

    Args:
        config: the pool's settings.
        url: the Redis URL the pool uses.
    """

    def __init__(self, config: Config, url: str, supervisor_id: str = "",
                 on_reconnect: Callable[[], None] | None = None,
                 on_requeue: Callable[[str, str, int, int], None] | None = None) -> None:
        """
        Args:
            supervisor_id: the id announced in ``<p>:supervisor:<id>`` (``host:pid:nonce``).
            on_reconnect: called when Redis answers again after an outage (metrics).
            on_requeue: called with (queue, why, requeued, buried) after a dead worker's jobs
                were requeued ('died') or reclaimed ('expired') (metrics).
        """
        self.config = config
        # every queue a worker of this run may hold jobs on: a reload adds queues, and one it
        # removes is still held by the workers it has not replaced yet
        self.queues: dict[str, None] = dict.fromkeys(config.queues)
        self.url = url
        self.supervisor_id = supervisor_id
        self.on_requeue = on_requeue
        self._next_announce = 0.0
        self.keys = Keys(config.key_prefix)
        self.outage = Outage("supervisor", url, on_reconnect)
        self.dead_workers: list[str] = []
        self._causes: dict[str, str] = {}  # how each of dead_workers died
        self._next_reclaim = 0.0
        self._reclaim_after = 0.0
        self._marker_seen = False
        self._run_id: str | None = None
        self._policy: str | None = None  # maxmemory-policy at the last check
        self._evicted: int | None = None  # evicted_keys at the last check
        self._unreported_evictions = 0
        self._next_eviction_report = 0.0
        self._last_error: str | None = None
        self._redis: redis.Redis | None = None
        self._scripts: Scripts | None = None

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = sync_client(self.config, self.url)
        return self._redis

    @property
    def scripts(self) -> Scripts:
        if self._scripts is None:
            self._scripts = Scripts(self.redis, self.keys)
        return self._scripts

    def reload(self, config: Config) -> None:
        """Use a reloaded config: its dead-letter and delivery settings for every burial and
        requeue from now on, and its queues besides every queue served before."""
        self.config = config
        self.queues.update(dict.fromkeys(config.queues))

    def ping(self) -> None:
        """PING Redis. A refusal is an answer: MISCONF refuses even PING, and workers wait it out."""
        try:
            self.redis.ping()
        except redis.exceptions.ResponseError as exc:
            if not is_refusal(exc):
                raise

    def disconnect(self) -> None:
        """Drop pooled connections: called before every fork, so no socket is shared with a child."""
        if isinstance(self._redis, redis.cluster.RedisCluster):
            self._redis.disconnect_connection_pools()
        elif self._redis is not None:
            self._redis.connection_pool.disconnect()

    @property
    def _burial(self) -> dict[str, Any]:
        """How requeue.lua keeps the poison jobs it buries."""
        return {"dead_ttl_ms": int(self.config.dead_letter.ttl_s * 1000),
                "dead_max": self.config.dead_letter.max_jobs, "events": self.config.events}

    def worker_died(self, worker_id: str, cause: str = "") -> None:
        """Queue the requeue of a worker the supervisor saw exit (done on this or a later tick).

        Args:
            cause: how it died ('killed by SIGSEGV'), kept on the jobs it had started.
        """
        self.dead_workers.append(worker_id)
        self._causes[worker_id] = cause
        self.announce_soon()

    def tick(self, reclaim: bool = True, presence: Mapping[str, Any] | None = None) -> None:
        """Do what is due; never raises for a Redis error (it is retried next tick).

        Each chore is a step of its own: a chore Redis refuses (at maxmemory the announce is
        refused, requeues are not) does not hold up the others, and is retried next tick.

        Args:
            reclaim: look for workers whose heartbeat expired (not while stopping).
            presence: the supervisor's fields for ``<p>:supervisor:<id>``, written once per
                heartbeat interval (None: do not announce).
        """
        try:
            if self.outage.is_cut_off:
                with contextlib.suppress(redis.exceptions.ResponseError):  # a refusal is an answer too
                    self.redis.ping()
                self._recovered(CONNECTION)
            ok = self._step("requeue", self._requeue_dead)
            now = clock.monotonic()
            if presence is not None and now >= self._next_announce:
                self._next_announce = now + self.config.heartbeat_interval_s
                ok &= self._step("announce", self.announce, presence)
            if reclaim and now >= self._next_reclaim:
                self._next_reclaim = now + self.config.reclaim_interval_s
                ok &= self._step("check", self.check_data)
                if now >= self._reclaim_after:
                    ok &= self._step("reclaim", self.reclaim_expired) and self._step("prune", self._prune_supervisors)
        except OUTAGE_ERRORS as exc:
            self.outage.failed(exc)
            return
        if ok:
            self._last_error = None

    def _step(self, path: str, chore: Callable[..., Any], *args: Any) -> bool:
        """Run one chore; False when Redis refused it or answered with an error (a lost
        connection raises: the rest of the tick would only wait for its timeouts too)."""
        try:
            chore(*args)
        except redis.exceptions.ResponseError as exc:
            if isinstance(exc, OUTAGE_ERRORS):  # (LOADING is both)
                raise
            if is_refusal(exc):  # OOM, MISCONF, BUSY, READONLY: waited out, logged by the Outage
                self.outage.failed(exc, path)
            else:
                self._report_error(exc)
            return False
        self._recovered(path)
        return True

    def _recovered(self, path: str) -> None:
        """A chore went through after a failure. If it was the connection, or a refusal that may
        have kept the workers from renewing their heartbeats, every heartbeat looked stale from
        here: hold reclaiming off for one TTL so that the workers can renew theirs first."""
        if self.outage.recovered(path):
            self._next_announce = 0.0
            self._reclaim_after = clock.monotonic() + self.config.heartbeat_ttl_s

    def _report_error(self, exc: ResponseError) -> None:
        """A missing ACL permission, a script's error: the supervisor must keep watching its
        workers, so report it (once until it changes) and retry next tick. The text compared is
        the reply's own, without redis-py's quote of the command (it holds a timestamp)."""
        text = describe_error(exc)
        if text != self._last_error:
            logger.error("housekeeping failed on Redis at %s: %s; retrying", redact_url(self.url), text)
            self._last_error = text

    # -- presence ---------------------------------------------------------------------------------

    def announce(self, presence: Mapping[str, Any]) -> None:
        """Write this supervisor's hash (with the heartbeat TTL: gone = supervisor lost)."""
        key = self.keys.supervisor(self.supervisor_id)
        with self.redis.pipeline(transaction=False) as pipe:
            # redis-py's mapping= key type is invariant (Mapping[FieldT, ...]): it refuses Mapping[str, Any]
            pipe.hset(key, mapping={"id": self.supervisor_id, "heartbeat_ms": clock.now_ms(), **presence})  # type: ignore[dict-item]
            # The supervisor's loop ticks up to once a second: the hash must outlive one tick.
            pipe.pexpire(key, int((self.config.heartbeat_ttl_s + PRESENCE_SLACK_S) * 1000))
            pipe.sadd(self.keys.supervisors(), self.supervisor_id)
            pipe.execute()

    def announce_soon(self) -> None:
        """Announce on the next tick (a worker started or exited: status should see it now)."""
        self._next_announce = 0.0

    def withdraw(self) -> None:
        """Leave the registry at a clean stop, so that status does not show this supervisor as lost."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.supervisor(self.supervisor_id))
            pipe.srem(self.keys.supervisors(), self.supervisor_id)
            pipe.execute()

    def _prune_supervisors(self) -> None:
        """Forget supervisors whose hash expired (killed, host lost), as reclaim forgets their
        workers; SREM is idempotent, so several supervisors may do it at once."""
        members = [cast(bytes, m).decode() for m in self.redis.smembers(self.keys.supervisors())]
        if not members:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.exists(self.keys.supervisor(member))
            alive = pipe.execute()
        gone = [m for m, is_alive in zip(members, alive, strict=True) if not is_alive]
        if gone:
            self.redis.srem(self.keys.supervisors(), *gone)

    # -- requeue and reclaim ----------------------------------------------------------------------

    def _requeue_dead(self) -> None:
        while self.dead_workers:
            worker_id = self.dead_workers[0]
            cause = self._causes.get(worker_id, "")
            for queue in self.queues:
                requeued, buried = self.scripts.requeue(
                    queue, worker_id, "died", self.config.max_deliveries, clock.now_ms(), cause=cause,
                    **self._burial)
                self._report(worker_id, queue, requeued, buried, _why_died(cause))
                if self.on_requeue is not None:
                    self.on_requeue(queue, "died", requeued, buried)
            self._forget(worker_id)
            self.dead_workers.pop(0)
            self._causes.pop(worker_id, None)

    def reclaim_expired(self) -> int:
        """Reclaim the jobs of every worker whose liveness key expired; returns jobs requeued.

        Asks each queue's registry for its expired workers only (expired.lua: by their deadline
        in the server's clock), so a pass costs one script call per queue and one per dead
        worker, whatever the size of the fleet; requeue.lua re-checks each and moves its jobs
        exactly once among supervisors racing for it.
        """
        total = 0
        for queue in self.queues:
            while True:
                expired = [cast(bytes, w).decode() for w in self.scripts.expired(queue, EXPIRED_BATCH)]
                total += sum(self._reclaim(queue, worker_id) for worker_id in expired)
                if len(expired) < EXPIRED_BATCH:
                    break
        return total

    def _reclaim(self, queue: str, worker_id: str) -> int:
        reply = self.scripts.requeue(
            queue, worker_id, "reclaim", self.config.max_deliveries, clock.now_ms(), cause=EXPIRED_CAUSE,
            **self._burial)
        if isinstance(reply, int):  # it heartbeated meanwhile, or another supervisor was first
            logger.debug("reclaim of %s on %s: %s", worker_id, queue, RequeueCode(reply).name)
            return 0
        requeued, buried = reply
        self._report(worker_id, queue, requeued, buried, "its heartbeat expired")
        if self.on_requeue is not None:
            self.on_requeue(queue, "expired", requeued, buried)
        self._forget(worker_id)
        return int(requeued)

    def _forget(self, worker_id: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.srem(self.keys.workers(), worker_id)
            pipe.execute()

    def _report(self, worker_id: str, queue: str, requeued: int, buried: int, why: str) -> None:
        if requeued:
            logger.warning("requeued %d job(s) of %s on %s: %s", requeued, worker_id, queue, why)
        if buried:
            logger.error("moved %d job(s) of %s on %s to the dead set: delivered %d times, "
                         "and their worker died each time (max_deliveries)",
                         buried, worker_id, queue, self.config.max_deliveries)

    # -- data loss ------------------------------------------------------------------------------

    def check_data(self) -> None:
        """Shout when Redis lost the pool's data (restart without persistence, FLUSHALL, eviction).

        A marker hash is written once; if it disappears, everything written before it is gone
        too. The server's run_id tells a restart from a flush in the message, and its eviction
        policy and count (checked here, every reclaim interval, so a CONFIG SET at run time is
        seen) tell an evicting server.
        """
        marker = self.keys.marker()
        run_id, evicting = self._read_server(marker)
        restarted = self._run_id is not None and run_id != self._run_id
        if self.redis.exists(marker):
            if restarted:
                logger.warning("Redis at %s restarted or failed over (run_id changed) and kept its data",
                               redact_url(self.url))
        elif self._marker_seen:
            self._data_lost(run_id, restarted, evicting)
        else:
            self.redis.hsetnx(marker, "created_ms", clock.now_ms())
        self._marker_seen = True
        self._run_id = run_id

    def _data_lost(self, run_id: str, restarted: bool, evicting: str) -> None:
        if evicting:
            what, cause, fix = (f"is evicting keys ({evicting}) and evicted the pool's", "evicting",
                                "Set maxmemory-policy noeviction (and enough maxmemory).")
        elif restarted:
            what, cause, fix = ("restarted without its data (no persistence?)", "restarted",
                                "Check its persistence settings (appendonly yes).")
        else:
            what, cause, fix = ("lost the pool's keys (FLUSHALL?)", "flushed", "Check who deletes them.")
        logger.critical("Redis at %s %s: every job queued before now may be gone. %s", redact_url(self.url), what, fix)
        self.redis.hset(self.keys.marker(), mapping={"data_lost_ms": clock.now_ms(), "run_id": run_id,
                                                     "cause": cause, "policy": self._policy or ""})

    def _read_server(self, marker: str) -> tuple[str, str]:
        """The server's run_id, and how it evicts ('' when it does not): policy and evicted_keys."""
        try:
            info = server_info(self.redis, "server", marker)
            memory = server_info(self.redis, "memory", marker)
            evicted = int(server_info(self.redis, "stats", marker).get("evicted_keys", 0))
        except redis.exceptions.ResponseError as exc:
            if is_refusal(exc):
                raise
            return "", ""  # INFO not allowed for this user: judge by the marker alone
        return str(info.get("run_id", "")), self._watch_eviction(str(memory.get("maxmemory_policy", "")), evicted)

    def _watch_eviction(self, policy: str, evicted: int) -> str:
        """Warn when the policy turns to evicting (a CONFIG SET at run time) and when keys were
        evicted since the last check; returns a description while evicting, else ''."""
        if policy != self._policy and self._policy is not None:
            if policy == "noeviction":
                logger.warning("Redis maxmemory-policy is noeviction again (was %r)", self._policy)
            else:
                logger.warning("Redis maxmemory-policy changed to %r (was %r): eviction can silently delete "
                               "queued jobs; set it to 'noeviction'", policy, self._policy)
        self._policy = policy
        newly = evicted - self._evicted if self._evicted is not None else 0
        self._evicted = evicted
        self._unreported_evictions += max(0, newly)
        now = clock.monotonic()
        if self._unreported_evictions and now >= self._next_eviction_report:
            # at most once a minute: an evicting server evicts at every check
            logger.error("Redis evicted %d key(s) since the last report (maxmemory-policy %s): jobs and results "
                         "may be gone; set maxmemory-policy noeviction", self._unreported_evictions, policy or "?")
            self._unreported_evictions = 0
            self._next_eviction_report = now + EVICTION_REPORT_S
        if policy and policy != "noeviction":
            return f"maxmemory-policy {policy}, {evicted} keys evicted"
        return f"{newly} keys evicted" if newly > 0 else ""


def _why_died(cause: str) -> str:
    """'it was killed by SIGSEGV', 'it exited with code 3' (the log line of a requeue)."""
    if not cause:
        return "it died"
    return f"it was {cause}" if cause.startswith("killed") else f"it {cause}"

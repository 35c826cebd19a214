"""Bulk dead-set actions against the real server: `retry_dead(all=True)` and `purge_dead(all=True)`
walk the dead set a page at a time, handle every id once, end while jobs keep dying, and ride out
a lost reply without redoing the pages already done."""

from __future__ import annotations

import itertools
import math

import pytest

from pool import dead_letter
from pool.client import AsyncClient
from pool.keys import Keys, make_worker_id
from pool.lua import Ack, Scripts
from pool.testing import bury
from tests.faults import FaultProxy

PAGE = 7
DEAD = 3_000


@pytest.fixture(autouse=True)
def small_pages(monkeypatch):
    """Pages of 7 ids: thousands of dead jobs make hundreds of pages, and page ends fall inside
    runs of ids that died in the same millisecond."""
    monkeypatch.setattr(dead_letter, "DEAD_PAGE", PAGE)


def dead_ids(count: int, stem: str = "d") -> list[str]:
    return [f"{stem}{i}" for i in range(count)]


def bury_with_ties(r, prefix: str, job_ids: list[str], first_ms: int = 10_000) -> None:
    """Fifty jobs per millisecond of death: the dead set's scores tie across page boundaries."""
    for first in range(0, len(job_ids), 50):
        bury(r, prefix, "default", job_ids[first:first + 50], first_ms + first // 50)


class Pages:
    """An on_progress that keeps what it was told, and runs ``each`` after every page."""

    def __init__(self, each=None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.each = each

    def __call__(self, handled: int, total: int) -> None:
        self.calls.append((handled, total))
        if self.each is not None:
            self.each(len(self.calls))

    def steps(self) -> list[int]:
        handled = [0] + [done for done, _ in self.calls]
        return [after - before for before, after in itertools.pairwise(handled)]


@pytest.mark.parametrize("action", ["retry", "purge"])
async def test_every_dead_job_is_handled_once_a_page_at_a_time(make_config, url, r, prefix, action):
    """Thousands of dead jobs: one call per id, in pages of DEAD_PAGE, every one done once."""
    job_ids = dead_ids(DEAD)
    bury_with_ties(r, prefix, job_ids)
    keys = Keys(prefix)
    pages = Pages()
    async with AsyncClient(make_config(), url) as client:
        op = client.retry_dead if action == "retry" else client.purge_dead
        assert await op(all=True, on_progress=pages) == DEAD
    assert len(pages.calls) == math.ceil(DEAD / PAGE)
    assert set(pages.steps()) == {PAGE, DEAD % PAGE} and pages.calls[-1] == (DEAD, DEAD)
    assert r.zcard(keys.dead("default")) == 0
    if action == "retry":
        queued = [raw.decode() for raw in r.lrange(keys.queue("default"), 0, -1)]
        assert sorted(queued) == sorted(job_ids)  # each id once: none skipped, none sent twice
        assert {r.hget(keys.job("default", job_id), "status") for job_id in job_ids} == {b"queued"}
    else:
        assert r.exists(*(keys.job("default", job_id) for job_id in job_ids)) == 0


def die_again(r, prefix: str, now_ms: int) -> None:
    """Every job waiting in the queue is claimed and dies at once (a retry of a job still broken)."""
    scripts, worker_id = Scripts(r, Keys(prefix)), make_worker_id("again")
    claimed = scripts.claim("default", worker_id, now_ms, r.llen(Keys(prefix).queue("default")), 0)[1]
    ids = [dict(zip(record[::2], record[1::2], strict=True))[b"id"].decode() for record in claimed]
    scripts.ack_many("default", worker_id, [Ack(job_id, "dead", now_ms, 60_000, ["error", "E"]) for job_id in ids],
                     dead_max=1_000_000)


async def test_a_retry_ends_while_its_jobs_die_again_and_leaves_the_late_deaths(make_config, url, r, prefix):
    """Each page's jobs die again at once: the run still ends, having sent each back once. Jobs
    that died after the run started are left for the next one, as is one buried meanwhile with
    a time of death before the page reached (a host whose clock is behind); one buried ahead of
    the walk is sent back."""
    job_ids = dead_ids(300)
    bury_with_ties(r, prefix, job_ids)
    keys = Keys(prefix)

    def more_deaths(page: int) -> None:
        die_again(r, prefix, 20_000 + page)
        if page == 20:
            bury(r, prefix, "default", ["behind"], 10_000)
            bury(r, prefix, "default", ["ahead"], 10_005)

    pages = Pages(more_deaths)
    async with AsyncClient(make_config(), url) as client:
        assert await client.retry_dead(all=True, on_progress=pages) == 301
    assert len(pages.calls) == math.ceil(301 / PAGE)
    left = {raw.decode() for raw in r.zrange(keys.dead("default"), 0, -1)}
    assert left == {*job_ids, "ahead", "behind"}  # sent back once each, dead again, not retried again
    assert r.hexists(keys.job("default", "ahead"), "revived_ms")  # sent back, then died once more
    assert not r.hexists(keys.job("default", "behind"), "revived_ms")  # never sent back


async def test_a_lost_reply_mid_run_resends_only_its_own_page(make_config, server, r, prefix):
    """The reply of one page's read, and later of one page's scripts, is lost: every id is still
    sent back once, and no page already done is sent again."""
    job_ids = dead_ids(DEAD)
    bury_with_ties(r, prefix, job_ids)
    keys = Keys(prefix)
    r.config_resetstat()

    with FaultProxy(server.port) as proxy:
        def cut(page: int) -> None:
            if page in (30, 60):
                proxy.drop_reply_of(b"ZRANGEBYSCORE" if page == 30 else b"EVALSHA")

        async with AsyncClient(make_config(redis={"url": proxy.url}), proxy.url) as client:
            count = await client.retry_dead(all=True, on_progress=Pages(cut))
        assert proxy.dropped_replies == 2
    assert DEAD - PAGE <= count <= DEAD  # ids done before the lost reply count as not done on the resend
    assert sorted(raw.decode() for raw in r.lrange(keys.queue("default"), 0, -1)) == sorted(job_ids)
    assert r.zcard(keys.dead("default")) == 0
    # one script call per id, and at most one page's calls again
    assert DEAD <= r.info("commandstats")["cmdstat_evalsha"]["calls"] <= DEAD + PAGE


async def test_named_ids_go_a_page_per_round_trip(make_config, url, r, prefix):
    """retry_dead with a list of ids: the same pages, and the count of those that went."""
    job_ids = dead_ids(40)
    bury(r, prefix, "default", job_ids, 10_000)
    pages = Pages()
    async with AsyncClient(make_config(), url) as client:
        assert await client.purge_dead(job_ids, on_progress=pages) == 40
    assert pages.steps() == [PAGE] * 5 + [5] and pages.calls[-1] == (40, 40)

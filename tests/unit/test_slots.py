"""JobSlots: the admission rule of one worker process, and its transitions."""

from __future__ import annotations

import asyncio

from pool.worker.claim_reply import decode_claim
from pool.worker.slots import JobSlots


class _Task:
    """Stands in for a job's task: the slots only keep it and may cancel it."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def _start(slots: JobSlots, job_id: str, solo: bool = False) -> _Task:
    task = _Task()
    slots.started(job_id, task, solo=solo)  # type: ignore[arg-type]
    return task


def test_at_most_concurrency_handlers_run():
    """Free slots count down as jobs start and come back as their handlers return."""
    slots = JobSlots(2)
    _start(slots, "a")
    assert (slots.free(), slots.may_claim()) == (1, True)
    _start(slots, "b")
    assert (slots.free(), slots.may_claim()) == (0, False)
    slots.returned("a")
    assert (slots.busy(), slots.free()) == (1, 1)


def test_at_most_twice_concurrency_jobs_are_held_while_outcomes_are_written():
    """Jobs writing their outcome still count against 2 x concurrency: stalled acks stop claiming."""
    slots = JobSlots(2)
    for job_id in "abcd":
        _start(slots, job_id)
        slots.returned(job_id)
    assert (slots.busy(), slots.free(), slots.may_claim()) == (0, 0, False)
    slots.ended("a")
    assert slots.free() == 1


def test_a_reservation_holds_slots_until_the_claim_returns():
    """Slots reserved for a claim in flight are not free to another claim, and come back after."""
    slots = JobSlots(3)
    with slots.reserving(2):
        assert slots.free() == 1
    assert slots.free() == 3


def test_a_suspect_job_runs_alone_until_its_handler_returns():
    """While a solo job runs nothing is claimed; its end frees the process."""
    slots = JobSlots(4)
    _start(slots, "suspect", solo=True)
    assert not slots.may_claim()
    slots.returned("suspect")
    assert slots.may_claim()


def test_a_suspect_job_waiting_for_idle_blocks_claims_while_jobs_run():
    """After claim.lua's solo_wait, nothing is claimed until the process is idle."""
    slots = JobSlots(4)
    _start(slots, "a")
    slots.want_idle()
    assert not slots.may_claim()
    slots.returned("a")
    slots.ended("a")
    assert slots.may_claim()


async def test_wait_for_room_returns_when_a_slot_frees_and_answers_the_idle_wish():
    """A claim pass waiting for room wakes when a job ends; the suspect job's wish is then met."""
    slots = JobSlots(1)
    _start(slots, "a")
    slots.want_idle()
    waiter = asyncio.create_task(slots.wait_for_room(asyncio.Event()))
    await asyncio.sleep(0)  # let it block
    assert not waiter.done()
    slots.ended("a")
    assert await asyncio.wait_for(waiter, 1) is True
    assert not slots.idle_wanted


async def test_wait_for_room_returns_false_when_stopping():
    """A stop ends the wait for room: no claim starts after it."""
    slots = JobSlots(1)
    _start(slots, "a")
    stopping = asyncio.Event()
    waiter = asyncio.create_task(slots.wait_for_room(stopping))
    await asyncio.sleep(0)  # one yield, no time: the waiter is inside its wait before the stop comes
    stopping.set()
    slots.wake()
    assert await asyncio.wait_for(waiter, 1) is False


def test_max_starts_bounds_the_jobs_a_process_starts():
    """With max_jobs_per_process the slots run out for good, and the process is spent once idle."""
    slots = JobSlots(4, max_starts=2)
    _start(slots, "a")
    _start(slots, "b")
    assert (slots.free(), slots.is_spent()) == (0, False)
    slots.ended("a")
    slots.ended("b")
    assert slots.is_spent()


def test_cancel_cancels_a_running_job_and_remembers_one_not_started():
    """A cancel request cancels the named task, is kept for a job not started, and skips one acking."""
    slots = JobSlots(4)
    running, acking = _start(slots, "running"), _start(slots, "acking")
    slots.returned("acking")
    slots.cancel(["running", "later", "acking"])
    assert (running.cancelled, acking.cancelled) == (True, False)
    assert slots.cancel_requested == {"running", "later"}
    slots.ended("running")
    assert slots.cancel_requested == {"later"}


def test_handlers_running_leaves_out_jobs_writing_their_outcome():
    """The drain cancels handlers, never a job whose outcome is being written."""
    slots = JobSlots(4)
    a, _ = _start(slots, "a"), _start(slots, "b")
    slots.returned("b")
    assert slots.handlers_running() == [a]


def test_claim_reply_is_decoded_into_jobs_markers_and_counts():
    """claim.lua's pairs become typed values: a job, a missing record, a corrupt one, the solo_wait marker."""
    raw = [1234, [
        [b"id", b"j1", b"handler", b"h", b"queue", b"q", b"args", b"[]", b"kwargs", b"{}", b"status", b"active",
         b"attempts", b"1", b"created_ms", b"1", b"started_ms", b"7", b"solo", b"1", b"deliveries", b"2"],
        [b"id", b"gone", b"missing", b"1"],
        [b"id", b"bad", b"handler", b"h", b"args", b"not json"],
        [b"solo_wait", b"1"],
    ], 50]
    reply = decode_claim(raw, "q")
    assert (reply.next_due_ms, reply.records, reply.solo_wait, reply.wait_ms) == (1234, 4, True, 50)
    good, gone, bad = reply.jobs
    assert (good.job_id, good.solo, good.started_ms, good.deliveries, good.corrupt) == ("j1", True, 7, "2", None)
    assert good.job is not None and good.job.handler == "h"
    assert (gone.job_id, gone.missing, gone.job) == ("gone", True, None)
    assert bad.corrupt is not None and bad.corrupt.startswith("CorruptJob: job bad")
    assert bad.job is not None and (bad.job.id, bad.job.queue) == ("bad", "q")

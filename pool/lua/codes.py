"""The return codes of the Lua scripts, in one table: an IntEnum per script that answers with more
than a count or a yes/no.

The scripts see the same names: the loader renders these enums into the ``codes`` include
(:func:`lua_tables`), so ``return AckCode.NOT_ACTIVE`` in ack.lua and ``AckCode.NOT_ACTIVE`` in
Python are one definition, and neither side can drift from the other. A caller decodes a reply
once, where it receives it (``AckCode(reply)``), and from then on compares members, not numbers.
The negative codes that callers treat as errors also map to exceptions (``pool.lua.check``).
"""

from __future__ import annotations

from enum import IntEnum


class AckCode(IntEnum):
    """One code per ack in ack.lua's reply."""

    ACKED = 1
    CANCELLED = 2  # acked as 'cancelled' instead of 'retrying': cancellation was requested while it ran
    ALREADY_ACKED = 0  # a retry of this worker's own ack after a lost reply: nothing changed
    NOT_ACTIVE = -1  # no longer in this worker's running set (requeued, reclaimed, cancelled)


class CancelCode(IntEnum):
    """cancel.lua's reply; the lower-case names are what :meth:`pool.AsyncClient.cancel` returns."""

    CANCELLED = 1  # it was waiting: finished as 'cancelled', it never runs
    REQUESTED = 2  # it is running (or claimed, not started): its worker or claim.lua cancels it
    FINISHED = 0  # already finished: nothing to cancel
    NOT_FOUND = -1  # no such job


class RequeueCode(IntEnum):
    """requeue.lua's refusals in 'reclaim' mode (otherwise it answers {requeued, buried})."""

    WORKER_ALIVE = -1  # the liveness key still exists: nothing moved
    ALREADY_RECLAIMED = -2  # another caller unregistered the worker first: nothing moved


CODES: tuple[type[IntEnum], ...] = (AckCode, CancelCode, RequeueCode)


def lua_tables() -> str:
    """The enums as Lua tables (``local AckCode = {ACKED = 1, ...}``): the ``codes`` include."""
    lines = ["-- codes: generated from pool/lua/codes.py (the one table of return codes)"]
    for enum in CODES:
        members = ", ".join(f"{member.name} = {member.value}" for member in enum)
        lines.append(f"local {enum.__name__} = {{{members}}}")
    return "\n".join(lines) + "\n"

"""The pre-fork supervisor behind `pool run`: sync, never an event loop, never a handler import.

Its modules: arbiter (Supervisor: loop, signals, children, roll, backoff), children, forking,
auxiliary and exporter (its other children), housekeeping (Redis chores), reload.
"""

from pool.supervisor.arbiter import Supervisor

__all__ = ["Supervisor"]

"""One worker process: an asyncio loop of job slots, everything built after the fork.

Its modules: process (Worker: lifecycle, job tasks, drain), slots, fetcher and claim_reply (claiming),
execution and outcomes (one job), acks (group commit), heartbeat (presence), scheduler.
"""

from pool.worker.process import Worker, main

__all__ = ["Worker", "main"]

"""What bench/peers.py runs on every system: one task body, and one adapter module per system.

- ``body``: the task body every system runs (noop, sleep, payload), counting into a per-process
  shared-memory file instead of Redis, so the figures measure the queue and not the probe;
- ``base``: what an adapter is (worker command lines, enqueue paths), and the shape P x C;
- ``<system>_peer``: the system's app/worker definitions, imported by its own worker CLI, and its
  ``Adapter`` that bench/peers.py drives. Each module docstring says how P x C maps onto it.
"""

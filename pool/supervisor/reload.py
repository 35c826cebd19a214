"""What a reload (SIGHUP) reads: the config file again, with the command line's overrides, checked
as `pool run` checks it at start, and without the settings a running pool cannot change.

The supervisor owns when a reload happens and how its workers are replaced; this module owns
only what the new config is, so that a bad edit is refused before any worker is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from pool import config as config_module
from pool import hooks
from pool.config import Config
from pool.handlers import check_importable

logger = logging.getLogger("pool.supervisor")

# Settings a reload cannot change in a running pool: they name its server, its keys, its files
# and its metrics port, which every running worker and the metrics process hold.
FIXED_ON_RELOAD = ("redis", "key_prefix", "state_dir", "metrics")


def reloaded(running: Config, overrides: Callable[[Config], Config]) -> Config:
    """The config a reload switches to, its fixed settings kept from ``running``.

    Raises:
        PoolError: the file is invalid now, or a handler or hook no longer imports.
    """
    fresh = overrides(config_module.load(running.path))
    check_importable(fresh)
    hooks.check_importable(fresh)
    for name in FIXED_ON_RELOAD:
        if getattr(fresh, name) != getattr(running, name):
            logger.warning("reload: %s changed; it takes effect only after a restart", name)
            fresh = replace(fresh, **{name: getattr(running, name)})
    return fresh

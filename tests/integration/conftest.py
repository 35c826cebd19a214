"""Fixtures of the script-level tests: the test's key layout and the scripts registered on ``r``."""

from __future__ import annotations

import pytest

from pool.keys import Keys
from pool.lua import Scripts


@pytest.fixture
def keys(prefix):
    return Keys(prefix)


@pytest.fixture
def scripts(r, keys):
    return Scripts(r, keys)

"""The sync Client's public methods take exactly the parameters of their AsyncClient twins, so
IDEs and type checkers see every option (``queue=``, ``timeout=``, ``delay=``) on both."""

from __future__ import annotations

import inspect

import pytest

from pool.client import AsyncClient, Client

SHARED = sorted(name for name, member in vars(Client).items()
                if not name.startswith("_") and callable(member) and hasattr(AsyncClient, name))


def test_the_sync_enqueue_spells_out_the_async_options():
    """``Client.enqueue`` has AsyncClient.enqueue's parameters: names, kinds, defaults, types."""
    sync, unsync = inspect.signature(Client.enqueue), inspect.signature(AsyncClient.enqueue)
    assert list(sync.parameters.values()) == list(unsync.parameters.values())
    assert sync.return_annotation == unsync.return_annotation == "Job"
    assert inspect.Parameter.VAR_KEYWORD not in {p.kind for p in sync.parameters.values()}


@pytest.mark.parametrize("name", SHARED)
def test_every_sync_method_takes_the_async_parameters(name):
    """Every public method both clients have takes the same parameters in both."""
    sync, unsync = inspect.signature(getattr(Client, name)), inspect.signature(getattr(AsyncClient, name))
    assert list(sync.parameters.values()) == list(unsync.parameters.values())


def test_the_shared_methods_are_found():
    """The parametrised test above runs over the whole shared API, not an empty list."""
    assert {"enqueue", "enqueue_many", "wait", "result", "cancel", "events"} <= set(SHARED)

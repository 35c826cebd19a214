"""The embedded server's state folder: private to the pool's user, whatever an older version left."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from pool.embedded import secure_state_dir
from tests.conftest import pool_cli


def _mode(path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_folder_left_open_is_made_private_and_links_are_left_alone(tmp_path):
    """0755 folders and 0644 files lose their group and other bits; a link's target is not touched."""
    state_dir = tmp_path / ".pool"
    (state_dir / "appendonlydir").mkdir(parents=True)
    for path in (state_dir, state_dir / "appendonlydir"):
        path.chmod(0o755)
    aof = state_dir / "appendonlydir" / "appendonly.aof.1.incr.aof"
    aof.write_text("*1\r\n")
    aof.chmod(0o644)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the pool's")
    outside.chmod(0o644)
    (state_dir / "link").symlink_to(outside)
    secure_state_dir(state_dir)
    assert (_mode(state_dir), _mode(state_dir / "appendonlydir"), _mode(aof)) == (0o700, 0o700, 0o600)
    assert _mode(outside) == 0o644


def test_a_new_folder_is_created_private(tmp_path):
    secure_state_dir(tmp_path / "a" / ".pool")
    assert _mode(tmp_path / "a" / ".pool") == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_state_dir_of_another_user_is_one_line(tmp_path):
    """pool run refuses another user's state folder with one line and exit 2."""
    (tmp_path / ".pool").mkdir()
    os.chown(tmp_path / ".pool", 65534, 65534)
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({"handlers": ["examples.tasks"]}))
    result = pool_cli("run", str(config), timeout=30)
    assert result.returncode == 2
    assert result.stderr == (f"pool: state_dir {tmp_path / '.pool'} is not a folder of this user (uid 0, its owner "
                             "is uid 65534); run the pool as its owner or set another state_dir\n")


def test_a_client_told_a_pool_runs_but_its_server_is_gone(tmp_path, monkeypatch):
    """While a pool run holds the folder but no server comes back, the message says so, not "start it"."""
    from pool import embedded
    from pool.config import from_mapping
    from pool.connection import resolve_url
    from pool.errors import RedisUnavailable

    config = from_mapping({"handlers": ["examples.tasks"]}, tmp_path / "pool.yaml", {})
    secure_state_dir(config.state_dir)
    monkeypatch.setattr(embedded, "HANDOVER_WAIT_S", 0.2)
    users = embedded._Lock(config.state_dir / embedded.USERS_LOCK)  # what every pool run holds
    assert users.acquire(shared=True)
    try:
        with pytest.raises(RedisUnavailable, match=r"did not come back within 0.2s although a pool run uses it"):
            resolve_url(config)
    finally:
        users.release()
    with pytest.raises(RedisUnavailable, match="is not running"):
        resolve_url(config)

"""Connecting for real: ACL users, db numbers, TLS, and passwords kept out of every output."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import uuid

import pytest
import redis
import trustme

from pool import AsyncClient, Client
from pool.config_values import redact_url
from pool.embedded import free_port
from pool.errors import RedisUnavailable
from pool.testing import drain
from tests.conftest import pool_cli


@pytest.fixture
def acl_user(r):
    name, password = "u" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex
    r.acl_setuser(name, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
                  commands=["+@all"])
    yield name, password
    r.acl_deluser(name)


@pytest.fixture
def tcp_url(server):
    return f"redis://127.0.0.1:{server.port}"


def test_redact_hides_passwords():
    assert redact_url("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("rediss://:s3cret@host:6380") == "rediss://:***@host:6380"
    assert redact_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


async def test_acl_user_and_password_from_config(make_config, tcp_url, acl_user):
    name, password = acl_user
    config = make_config(redis={"url": f"{tcp_url}/0", "username": name, "password": password})
    async with AsyncClient(config) as client:
        job = await client.enqueue("tests.sample_handlers.add", 1, 2)
        await drain(config, config.redis.url)
        assert await client.result(job.id, timeout=5) == 3


async def test_wrong_password_is_a_clear_error_without_the_password(make_config, tcp_url, acl_user):
    name, _ = acl_user
    config = make_config(redis={"url": f"redis://{name}:wrong-secret@127.0.0.1:{tcp_url.rsplit(':', 1)[1]}/0"})
    async with AsyncClient(config) as client:
        with pytest.raises(RedisUnavailable) as info:
            await client.enqueue("tests.sample_handlers.add", 1, 2)
    assert "wrong-secret" not in str(info.value)
    assert f"redis://{name}:***@127.0.0.1" in str(info.value)


def test_status_never_prints_the_password(write_config, tcp_url, acl_user):
    name, password = acl_user
    port = tcp_url.rsplit(":", 1)[1]
    config = write_config(redis={"url": f"redis://{name}:{password}@127.0.0.1:{port}/0"})
    for args in (["status", str(config)], ["status", str(config), "--json"]):
        result = pool_cli(*args)
        assert result.returncode == 0, result.stderr
        assert password not in result.stdout + result.stderr
        assert f"{name}:***@" in result.stdout


def test_db_number_in_url_selects_the_database(make_config, tcp_url, r):
    config = make_config(redis={"url": f"{tcp_url}/3"})
    with Client(config) as client:
        job = client.enqueue("tests.sample_handlers.add", 1, 2)
    assert not r.exists(f"{config.key_prefix}:{{default}}:job:{job.id}")  # not in db 0
    other = redis.Redis.from_url(f"{tcp_url}/3")
    assert other.exists(f"{config.key_prefix}:{{default}}:job:{job.id}")
    other.close()


def test_unix_socket_url(make_config, server):
    config = make_config(redis={"url": f"unix://{server.socket_path}"})
    with Client(config) as client:
        assert client.enqueue("tests.sample_handlers.add", 1, 1).id


class TLSProxy:
    """Terminates TLS on a loopback port and forwards bytes to the plain test server."""

    def __init__(self, backend_port: int, context: ssl.SSLContext) -> None:
        self.port = free_port()
        self.backend_port = backend_port
        self.context = context
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TLSProxy:
        self.thread.start()
        assert self.ready.wait(10), "TLS proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.context)
        )
        self.ready.set()
        self.loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))  # let the cancelled pipes unwind
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
def tls(tmp_path, server):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with TLSProxy(server.port, context) as proxy:
        yield proxy, ca_file


def test_rediss_url_with_ca_file(make_config, tls):
    proxy, ca_file = tls
    config = make_config(redis={"url": f"rediss://127.0.0.1:{proxy.port}/0", "tls": {"ca_file": str(ca_file)}})
    with Client(config) as client:
        job = client.enqueue("tests.sample_handlers.add", 4, 4)
        assert client.get_job(job.id).args == (4, 4)


def test_rediss_refuses_an_untrusted_certificate(make_config, tls):
    proxy, _ = tls
    config = make_config(redis={"url": f"rediss://127.0.0.1:{proxy.port}/0", "connect_timeout": "2s"})
    with Client(config) as client, pytest.raises(RedisUnavailable, match="certificate verify failed"):
        client.enqueue("tests.sample_handlers.add", 1, 1)


def test_a_second_user_of_an_embedded_server_never_stops_it(tmp_path):
    """Another process (a second `pool run` on the same folder) shares the server, never stops it."""
    import subprocess
    import sys

    from pool.embedded import EmbeddedServer
    from tests.conftest import cli_env

    owner = EmbeddedServer(tmp_path / "state", persist=False)
    url = owner.start()
    try:
        guest = ("import sys; from pathlib import Path; from pool.embedded import EmbeddedServer\n"
                 "s = EmbeddedServer(Path(sys.argv[1]), persist=False); print(s.start(), s.owned); s.stop()")
        out = subprocess.run([sys.executable, "-c", guest, str(tmp_path / "state")], capture_output=True,
                             text=True, env=cli_env(), timeout=30, check=True).stdout.split()
        assert out == [url, "False"]
        assert redis.Redis.from_url(url).ping()
    finally:
        owner.stop()
    assert not (tmp_path / "state" / "server.json").exists()


def test_status_works_for_a_user_without_info(write_config, tcp_url, r):
    name, password = "noinfo" + uuid.uuid4().hex[:6], uuid.uuid4().hex
    r.acl_setuser(name, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-info"])
    try:
        config = write_config(redis={"url": f"{tcp_url}/0", "username": name, "password": password})
        result = pool_cli("status", str(config), "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["redis"]["version"] == "unknown"
    finally:
        r.acl_deluser(name)


def test_a_refused_command_is_one_line(write_config, tcp_url, r):
    name, password = "noeval" + uuid.uuid4().hex[:6], uuid.uuid4().hex
    r.acl_setuser(name, enabled=True, passwords=[f"+{password}"], keys=["*"],
                  commands=["+@all", "-evalsha", "-eval"])
    try:
        config = write_config(redis={"url": f"{tcp_url}/0", "username": name, "password": password})
        result = pool_cli("enqueue", str(config), "tests.sample_handlers.add", "1", "2")
        assert result.returncode == 3
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("pool: Redis refused the command: ")
    finally:
        r.acl_deluser(name)

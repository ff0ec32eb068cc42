"""Real Redis topologies started by the tests: a 6-node Cluster, and a Sentinel group.

Every process is a system ``redis-server`` bound to 127.0.0.1 on free ports,
started here and stopped here by its pid. Node timeouts are short (1 s) so a
failover takes a few seconds, not the production default of 15.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.redis_server import free_port, terminate

NODE_TIMEOUT_MS = 1000
"""``cluster-node-timeout`` and Sentinel's ``down-after-milliseconds``."""


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (apt-get install -y redis-server redis-tools)")
    return found


def _free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port in taken or port + 10000 > 65535:
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def command(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command through redis-cli, its reply as text ('' if the node does not answer)."""
    try:
        done = subprocess.run(
            [_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout.decode("utf-8", "replace")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until true; seconds it took. Raises after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


class Node:
    """One redis-server process."""

    def __init__(self, directory: Path, port: int, args: list[str]) -> None:
        self.port = port
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [
                _binary("redis-server"),
                *args,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def answers(self) -> bool:
        return command(self.port, "PING", timeout=1.0).strip() == "PONG"

    def kill(self) -> None:
        """SIGKILL: a crash, no goodbye to the cluster."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
            self.process = None


class LocalCluster:
    """Three masters and three replicas, created with ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, size: int = 6) -> None:
        self.directory = directory
        self.nodes: list[Node] = []
        self.size = size

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3])
        return f"redis+cluster://{hosts}"

    def start(self) -> LocalCluster:
        taken: set[int] = set()
        try:
            for index in range(self.size):
                port = _free_cluster_port(taken)
                taken.add(port)
                self.nodes.append(
                    Node(
                        self.directory / f"node-{index}",
                        port,
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            f"nodes-{port}.conf",
                            "--cluster-node-timeout",
                            str(NODE_TIMEOUT_MS),
                            "--cluster-require-full-coverage",
                            "no",
                            "--repl-diskless-sync-delay",
                            "0",
                            "--maxmemory-policy",
                            "noeviction",
                        ],
                    )
                )
            for node in self.nodes:
                wait_until(node.answers, 10, f"cluster node {node.port}")
            created = subprocess.run(
                [
                    _binary("redis-cli"),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-400:]!r}")
            wait_until(self.healthy, 30, "the cluster to be ok on every node")
        except BaseException:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        alive = [node for node in self.nodes if node.process is not None]
        if not all("cluster_state:ok" in command(n.port, "CLUSTER", "INFO") for n in alive):
            return False
        masters = [
            line for line in self.topology() if "master" in line[2] and "fail" not in line[2]
        ]
        return len(masters) >= 3 and all(line[7] == "connected" for line in masters)

    def topology(self) -> list[list[str]]:
        """``CLUSTER NODES`` from a node that answers: one split line per node."""
        for node in self.nodes:
            if node.process is None:
                continue
            text = command(node.port, "CLUSTER", "NODES")
            if text.strip():
                return [line.split() for line in text.strip().splitlines()]
        return []

    def master_of(self, key: str) -> Node:
        """The node serving ``key``'s slot now."""
        slot = int(command(self.nodes[0].port, "CLUSTER", "KEYSLOT", key).strip())
        for line in self.topology():
            if "master" not in line[2] or "fail" in line[2]:
                continue
            for spec in line[8:]:
                low, _, high = spec.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(line[1].split("@")[0].rsplit(":", 1)[1])
                    return next(node for node in self.nodes if node.port == port)
        raise RuntimeError(f"no master serves {key!r}")

    def masters(self) -> list[Node]:
        ports = {
            int(line[1].split("@")[0].rsplit(":", 1)[1])
            for line in self.topology()
            if "master" in line[2] and "fail" not in line[2]
        }
        return [node for node in self.nodes if node.port in ports and node.process is not None]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class LocalSentinel:
    """A master, a replica, and one sentinel (quorum 1) watching service ``svc``."""

    SERVICE = "svc"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master: Node | None = None
        self.replica: Node | None = None
        self.sentinel: Node | None = None

    @property
    def url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.SERVICE}"

    def start(self) -> LocalSentinel:
        try:
            master_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
            extra = ["--maxmemory-policy", "noeviction", "--repl-diskless-sync-delay", "0"]
            self.master = Node(self.directory / "master", master_port, extra)
            self.replica = Node(
                self.directory / "replica",
                replica_port,
                [*extra, "--replicaof", "127.0.0.1", str(master_port)],
            )
            wait_until(lambda: self.master is not None and self.master.answers(), 10, "master")
            wait_until(
                lambda: "master_link_status:up" in command(replica_port, "INFO", "replication"),
                20,
                "the replica to sync",
            )
            config = self.directory / "sentinel.conf"
            config.write_text(
                "\n".join(
                    [
                        f"sentinel monitor {self.SERVICE} 127.0.0.1 {master_port} 1",
                        f"sentinel down-after-milliseconds {self.SERVICE} {NODE_TIMEOUT_MS}",
                        f"sentinel failover-timeout {self.SERVICE} 5000",
                        "",
                    ]
                )
            )
            self.sentinel = Node(
                self.directory / "sentinel", sentinel_port, [str(config), "--sentinel"]
            )
            wait_until(
                lambda: (
                    str(master_port)
                    in command(sentinel_port, "SENTINEL", "get-master-addr-by-name", self.SERVICE)
                ),
                10,
                "the sentinel to know the master",
            )
            wait_until(
                lambda: (
                    "slaves=1"
                    in command(sentinel_port, "INFO", "sentinel").replace("replicas=", "slaves=")
                ),
                20,
                "the sentinel to know the replica",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def master_port(self) -> int:
        assert self.sentinel is not None
        reply = command(self.sentinel.port, "SENTINEL", "get-master-addr-by-name", self.SERVICE)
        return int(reply.split()[1])

    def stop(self) -> None:
        for node in (self.sentinel, self.replica, self.master):
            if node is not None:
                node.stop()


def stop_all(*things: Any) -> None:
    for thing in things:
        if thing is not None:
            thing.stop()

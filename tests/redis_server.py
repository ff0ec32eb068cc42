"""A real redis-server on a free loopback port, started by the tests themselves.

No fake Redis: the Lua script, expiry and the client's failure modes are the
real ones. ``.ci/run`` installs the binary on a fresh machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def terminate(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if the server has not gone after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class RedisServer:
    def __init__(
        self, directory: Path, port: int | None = None, extra: list[str] | None = None
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (apt-get install -y redis-server; .ci/run does it)"
            )
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.extra = list(extra or [])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(  # the system redis-server, loopback only
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--protected-mode",
                "yes",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
            self.process = None


@contextmanager
def commands_sent(store: Any) -> Iterator[list[str]]:
    """The names of the commands ``store`` sent Redis while inside: one per round trip.

    Seen by the server itself (``MONITOR``), so whatever path the store takes to
    Redis is counted, and nothing it skips is. The commands a script runs inside
    Redis are not round trips and are left out; so is this counter's own marker.
    """
    import redis

    watcher = redis.Redis.from_url(store._url, socket_timeout=10)
    marking = redis.Redis.from_url(store._url, socket_timeout=10)
    marking.ping()  # the marker's connection is made (and set up) before the watch begins
    marker = f"commands-sent-{os.urandom(6).hex()}"
    sent: list[str] = []
    with watcher.monitor() as monitor:  # on once Redis has answered MONITOR
        try:
            yield sent
        finally:
            marking.echo(marker)  # everything sent before it is seen before it
            for entry in monitor.listen():
                command = str(entry["command"])
                if marker in command:
                    break
                if entry.get("client_type") != "lua":
                    sent.append(command.split(" ", 1)[0].upper())
    watcher.close()
    marking.close()

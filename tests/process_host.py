"""A web host as real OS processes (gunicorn, ``secured-activation run``) on a free loopback port.

The command is started in its own session, its readiness is polled over HTTP,
its worker processes are read from ``/proc``, and it is stopped by its pid
(SIGTERM, then SIGKILL for the whole group if it lingers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.redis_server import free_port


class ProcessHost:
    def __init__(
        self,
        command: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        ready_path: str = "/activation/snippet.js",
        port: int | None = None,
        log: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or cwd / f"host-{self.port}.log"
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        with open(self.log, "wb") as output:  # loopback only: every command binds 127.0.0.1
            self.process = subprocess.Popen(
                self.command,
                cwd=cwd,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[0]} exited: {self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.command[0]} did not answer in time: {self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> list[int]:
        """The worker processes' pids: the master's children, less multiprocessing's helper."""
        pids: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for pid in children:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"resource_tracker" not in cmdline:
                    pids.append(int(pid))
        return pids

    def wait_for_workers(self, count: int, *, without: int | None = None) -> list[int]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = self.workers()
            if len(now) == count and without not in now:
                return now
            time.sleep(0.2)
        raise AssertionError(f"expected {count} workers, have {self.workers()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)

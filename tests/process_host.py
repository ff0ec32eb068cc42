"""A web host as real OS processes (gunicorn, ``secured-activation run``) on a free loopback port.

The command is started in its own session, its readiness is polled over HTTP,
its worker processes are read from ``/proc``, and it is stopped by its pid
(SIGTERM, then SIGKILL for the whole group if it lingers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.redis_server import free_port


def wait_until_answering(
    process: subprocess.Popen[Any],
    url: str,
    what: str,
    *,
    seconds: float,
    output: Callable[[], str],
    stop: Callable[[], None],
    http_error_answers: bool = False,
    output_when_silent: bool = False,
) -> None:
    """Poll ``url`` until it answers; raise if ``process`` exits, ``stop()`` it and raise if silent.

    With ``http_error_answers`` an HTTP error status counts as an answer (the host is up);
    ``output_when_silent`` adds ``output()`` to the timeout's message (only for output that
    can still be read once the process is stopped, such as a log file).
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {output()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            if http_error_answers:
                return
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    stop()
    detail = f": {output()}" if output_when_silent else ""
    raise RuntimeError(f"{what} did not answer in time{detail}")


def child_workers(pid: int) -> list[int]:
    """The pids of ``pid``'s children, less multiprocessing's resource tracker."""
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in cmdline:
                pids.append(int(child))
    return pids


def stop_process(
    process: subprocess.Popen[Any],
    first: signal.Signals,
    *,
    grace: float,
    group: bool,
    killed_wait: float = 15,
) -> None:
    """Send ``first`` (to the process group when ``group``), then SIGKILL the group after ``grace``."""
    if process.poll() is None:
        if group:
            os.killpg(process.pid, first)
        else:
            os.kill(process.pid, first)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=killed_wait)


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
        wait_until_answering(
            self.process,
            self.url + ready_path,
            self.command[0],
            seconds=90,
            output=lambda: self.output()[-3000:],
            stop=self.stop,
            http_error_answers=True,
            output_when_silent=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> list[int]:
        """The worker processes' pids: the master's children, less multiprocessing's helper."""
        return child_workers(self.process.pid)

    def wait_for_workers(self, count: int, *, without: int | None = None) -> list[int]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = self.workers()
            if len(now) == count and without not in now:
                return now
            time.sleep(0.2)
        raise AssertionError(f"expected {count} workers, have {self.workers()}")

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM, grace=20, group=False)


class ServedModule:
    """``python -m`` one of our modules, in its own session on a free loopback port.

    ``argv`` follows ``-m`` and says ``{port}`` where the port goes; the command
    binds 127.0.0.1 by default. It is polled at ``ready_path`` until it answers,
    and stopped by SIGINT to its whole group (SIGKILL after a grace). Its
    stderr is kept for the message when it does not come up.
    """

    def __init__(
        self,
        argv: list[str],
        what: str,
        *,
        env: dict[str, str] | None = None,
        ready_path: str = "/inspect/visitors",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", *(part.replace("{port}", str(self.port)) for part in argv)],
            cwd=Path(__file__).resolve().parents[1],
            env=None if env is None else {**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        wait_until_answering(
            self.process,
            self.url + ready_path,
            what,
            seconds=60,
            output=lambda: self.process.stderr.read()[-2000:],  # type: ignore[union-attr]
            stop=self.stop,
        )

    def workers(self) -> list[int]:
        """The worker processes' pids: the supervisor's children, less multiprocessing's helper."""
        return child_workers(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process, signal.SIGINT, grace=15, group=True)
        if self.process.stderr is not None:
            self.process.stderr.close()

"""The reference host as a real OS process (``secured-activation serve``), on a free loopback port."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.process_host import child_workers, stop_process, wait_until_answering
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]


class Host:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(  # loopback only: --host defaults to 127.0.0.1
            [sys.executable, "-m", "statemachine", "serve", "--port", str(self.port), *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        wait_until_answering(
            self.process,
            self.url + "/inspect/visitors",
            "serve",
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

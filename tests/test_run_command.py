"""``secured-activation run MODULE:APP --workers N`` and ``run_workers`` on an app module that
calls ``run_workers`` at import time, with no ``if __name__ == "__main__":`` guard: the
spawned workers import that module too, and must not start a second server each."""

from __future__ import annotations

import http.client
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process_host import ProcessHost
from tests.redis_server import free_port

BIN = Path(sys.executable).parent
UNGUARDED = """\
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from statemachine.web.serving import run_workers


async def pid(_request):
    return PlainTextResponse(str(os.getpid()))


app = Starlette(routes=[Route("/pid", pid)])
print("imported in", os.getpid(), flush=True)
run_workers("unguarded:app", host="127.0.0.1", port={port}, workers=2, factory=False)
"""


def pid_of(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/pid", headers={"Connection": "close"})
        response = connection.getresponse()
        assert response.status == 200
        return int(response.read())
    finally:
        connection.close()


def settled(host: ProcessHost) -> list[int]:
    """Two workers that stay the same for 3 s: no worker dies and is restarted."""
    first = sorted(host.wait_for_workers(2))
    time.sleep(3)
    assert sorted(host.workers()) == first
    assert host.process.poll() is None
    return first


@pytest.fixture(params=["cli", "script"])
def unguarded_host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessHost]:
    port = free_port()
    (tmp_path / "unguarded.py").write_text(UNGUARDED.replace("{port}", str(port)))
    if request.param == "cli":
        command = [str(BIN / "secured-activation"), "run", "unguarded:app", "--workers", "2"]
        command += ["--port", str(port)]
    else:
        command = [sys.executable, "unguarded.py"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    host = ProcessHost(command, cwd=tmp_path, env=env, ready_path="/pid", port=port)
    yield host
    host.stop()


def test_an_unguarded_app_module_starts_once(unguarded_host: ProcessHost) -> None:
    workers = settled(unguarded_host)
    seen = {pid_of(unguarded_host.port) for _ in range(40)}
    assert seen <= set(workers)
    output = unguarded_host.output()
    assert "Address already in use" not in output
    assert "Errno" not in output
    assert output.count("imported in") >= 2  # each worker imported it, and served on


def test_run_binds_tcp_and_refuses_a_bad_target(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [str(BIN / "secured-activation"), "run", "not a target"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "MODULE:APP" in done.stderr
    assert "Traceback" not in done.stderr
    for target, why in (("no_such_module:app", "no_such_module"), ("json:no_such_app", "json")):
        missing = subprocess.run(  # fails once, in the supervisor, before any worker starts
            [str(BIN / "secured-activation"), "run", target, "--workers", "2", "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert missing.returncode == 2, missing.stderr
        assert f"cannot load {target}" in missing.stderr
        assert why in missing.stderr.splitlines()[-1]
        assert "Traceback" not in missing.stderr
        assert "Ctrl-C to stop" not in missing.stderr  # no banner for a server that never ran
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = str(taken.getsockname()[1])
        for command in (["run", "json:dumps"], ["serve"]):
            in_use = subprocess.run(
                [str(BIN / "secured-activation"), *command, "--port", port],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd=tmp_path,
            )
            assert in_use.returncode == 1, in_use.stderr
            assert in_use.stderr.strip() == "secured-activation: error: Address already in use"
    finally:
        taken.close()
    from statemachine.web.serving import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


LOGGING_APP = """\
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from policies import DefensivePolicy
from statemachine import ActivationSession


class Instant:
    def activate(self, option):
        return None


async def flow(_request):
    # A real flow: its transitions are logged at info level, a provider error at warning.
    ActivationSession(lambda: "token", Instant(), DefensivePolicy(token_timeout=None)).activate()
    ActivationSession(lambda: 1 / 0, Instant(), DefensivePolicy(token_timeout=None)).activate()
    return PlainTextResponse(str(os.getpid()))


app = Starlette(routes=[Route("/pid", flow)])
"""


def test_workers_log_as_the_command_line_asked(tmp_path: Path) -> None:
    """Spawned workers apply the CLI's configuration: warnings on stderr, no info lines."""
    port = free_port()
    (tmp_path / "logging_app.py").write_text(LOGGING_APP)
    command = [str(BIN / "secured-activation"), "run", "logging_app:app", "--workers", "2"]
    command += ["--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    host = ProcessHost(command, cwd=tmp_path, env=env, ready_path="/pid", port=port)
    try:
        workers = set(host.wait_for_workers(2))
        seen = {pid_of(port) for _ in range(30)}
        assert seen <= workers
        deadline = time.monotonic() + 30
        while host.output().count("activation.provider_error") < 30:
            assert time.monotonic() < deadline, host.output()[-2000:]
            time.sleep(0.05)
        output = host.output()
        assert "activation.transition" not in output  # info is filtered out, as on the CLI
    finally:
        host.stop()

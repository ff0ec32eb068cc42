"""Run an ASGI app on several worker processes: ``secured-activation run`` and ``serve``.

Two traps are avoided here.

``TCP_NODELAY``: uvicorn's multi-worker mode bound its socket without naming
TCP until its fix of issue #3149 (0.55.0 has it), and asyncio sets
``TCP_NODELAY`` only on sockets whose protocol is ``IPPROTO_TCP``, so every
response written in two parts waited ~40 ms for a delayed ACK (a no-op
endpoint: 2.5 ms on one worker, a flat 44 ms on two). ``run_workers`` binds the
socket itself, as TCP, for any number of workers and any uvicorn release, and
hands it over as a socket (uvicorn's ``fd=`` would reopen it as a Unix socket).

Running itself again: the workers are *spawned* processes, which import the
parent's ``__main__`` module and then the app's module. A script or an app
module that calls ``run_workers`` at import time, without an
``if __name__ == "__main__":`` guard, would start a second server in every
worker, fail "Address already in use", die, be restarted by the supervisor,
and fail again, forever. The supervisor marks its workers through the
environment, and ``run_workers`` called inside one of them does nothing.
"""

from __future__ import annotations

import copy
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, Final

from statemachine.signals import logs

WORKER_MARK: Final = "SECURED_ACTIVATION_SUPERVISOR"
"""Set by ``run_workers`` to its own pid while it serves; inherited by the workers it spawns."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP listening socket whose accepted connections get ``TCP_NODELAY`` from asyncio."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def in_worker() -> bool:
    """True where ``run_workers`` already serves: a worker it spawned, or its own process
    while it serves one worker in place."""
    return os.environ.get(WORKER_MARK) is not None


class TargetError(Exception):
    """``MODULE:APP`` could not be loaded; the message says why in one line."""


def load_target(target: str) -> object:
    """Import ``module:attribute`` as the workers will, so that a bad target fails once."""
    from uvicorn.importer import ImportFromStringError, import_from_string

    try:
        return import_from_string(target)
    except ImportFromStringError as error:
        raise TargetError(str(error).splitlines()[0]) from None
    except Exception as error:  # noqa: BLE001 - the host's module failed while importing
        raise TargetError(f"importing {target} failed: {type(error).__name__}") from None


def worker_log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, plus ours when the command line set one.

    Each worker applies this (``dictConfig``) as soon as it starts; the entry
    we add makes it apply the command line's structlog configuration too.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    settings = logs.cli_settings()
    if settings is not None:
        filters = config.setdefault("filters", {})
        filters["secured_activation"] = {
            "()": "statemachine.signals.logs.configure_worker",
            **settings,
        }
    return config


def run_workers(
    target: str,
    *,
    host: str,
    port: int,
    workers: int,
    factory: bool = True,
    app_dir: str | None = None,
    ready: Callable[[], object] | None = None,
) -> None:
    """Run ``target`` (``module:attribute``) on ``workers`` processes until interrupted.

    ``factory=True``: the attribute is a function returning the ASGI app (called
    once per worker); ``False``: it is the app. ``app_dir`` is put first on
    the import path (the workers inherit it). The target is imported here once
    (``TargetError`` if it cannot be), then the socket is bound, as TCP, and
    shared by every worker; uvicorn's supervisor restarts a worker that
    dies. Every worker starts with the log configuration the command line
    set in this process (``logs.configure_for_cli``), if any. Called inside
    a worker (an unguarded call at import time), it returns at once.
    ``ready`` is called once the target has loaded and the socket is bound,
    before the workers start: a banner printed there never announces a
    server that then fails to start.
    """
    if in_worker():
        return
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ[WORKER_MARK] = str(os.getpid())
    try:
        load_target(target)  # here, once: a typo fails now, not in every worker forever
        sock = listening_socket(host, port)
    except BaseException:
        os.environ.pop(WORKER_MARK, None)
        raise
    try:
        if ready is not None:
            ready()
        config = uvicorn.Config(
            target,
            factory=factory,
            workers=workers,
            log_level="warning",
            log_config=worker_log_config(),
        )
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        os.environ.pop(WORKER_MARK, None)
        sock.close()

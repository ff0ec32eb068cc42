"""Structured logging: flat, machine-readable events, session id bound once.

The engine only emits events; configuring structlog (renderers, levels,
destinations) is the host's business. ``configure_for_cli`` is what our own
command line uses. Nothing here ever receives a token: the core passes
fingerprints, reason names and exception *types*, never messages from host
code (which might quote a token).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final

import structlog

LOGGER_NAME: Final = "secured_activation"

TRANSITION: Final = "activation.transition"
REJECTED: Final = "activation.rejected"
CALLBACK_ERROR: Final = "activation.callback_error"
PROVIDER_ERROR: Final = "activation.provider_error"
ACTIVATOR_ERROR: Final = "activation.activator_error"
STORE_ERROR: Final = "activation.store_error"
STORE_EVICTED: Final = "activation.store_evicted"
BUDGET_SPENT: Final = "activation.budget_spent"
LISTENER_ERROR: Final = "activation.listener_error"


PROXY: Any = structlog.get_logger(LOGGER_NAME)


_BASE: tuple[tuple[object, ...], Any, bool] | None = None
"""The proxy resolved once, with the configuration objects it was resolved under (held, so
that an identity compared later is never a recycled one), and whether it logs info."""


def _base() -> tuple[tuple[object, ...], Any, bool]:
    global _BASE
    config = structlog.get_config()
    processors, wrapper = config["processors"], config["wrapper_class"]
    factory, context = config["logger_factory"], config["context_class"]
    cached = _BASE
    if (
        cached is None
        or cached[0][0] is not processors
        or cached[0][1] is not wrapper
        or cached[0][2] is not factory
        or cached[0][3] is not context
    ):
        resolved = PROXY.bind()
        cached = _BASE = ((processors, wrapper, factory, context), resolved, info_enabled(resolved))
    return cached


def session_logger(session_id: str) -> Any:
    """A logger with the session id bound once, as structlog recommends.

    The lazy proxy defers to whatever configuration the host sets, even after
    import. Resolving it (the configuration read, a logger made by the
    factory) costs ~8x binding a key on a logger already resolved, and every
    session binds one; so the resolved logger is kept and reused for as long as
    structlog's configuration is the same objects (a host that configures
    again, or ``capture_logs``, gets a fresh one on the next bind).
    """
    return _base()[1].bind(session_id=session_id)


def info_enabled_now() -> bool:
    """Whether a logger bound now would log at info level (see ``info_enabled``)."""
    return _base()[2]


def info_enabled(logger: Any) -> bool:
    """Whether ``logger`` (a bound logger) would log at info level.

    A bound logger keeps the wrapper class it was bound with, so the answer
    holds for its life. structlog's filtering loggers and its stdlib wrapper
    answer ``is_enabled_for``; a logger that cannot say is taken as enabled.
    """
    check = getattr(logger, "is_enabled_for", None)
    if check is None:
        return True
    try:
        return bool(check(logging.INFO))
    except Exception:  # noqa: BLE001 - a logger that cannot say logs, as before
        return True


def emit(method: Any, event: str, **fields: Any) -> None:
    """Log, but never let a broken log sink change an activation's outcome.

    structlog, unlike the standard library's handlers, lets a writer's error
    propagate (a closed stream, a full disk); the engine must end its flow the
    same either way. A bare ``try`` rather than ``contextlib.suppress``: this
    runs on every transition, and the context manager costs more than the call.
    """
    try:  # noqa: SIM105
        method(event, **fields)
    except Exception:  # noqa: BLE001, S110 - losing a log line beats losing the flow
        pass


_CLI_SETTINGS: dict[str, bool] | None = None
"""What ``configure_for_cli`` last applied in this process (None: never called)."""


def cli_settings() -> dict[str, bool] | None:
    """The command line's log configuration, for worker processes to apply in turn."""
    return None if _CLI_SETTINGS is None else dict(_CLI_SETTINGS)


def configure_worker(**settings: bool) -> logging.Filter:
    """Apply the command line's configuration in a spawned worker process.

    Worker processes start fresh: without this they would run on structlog's
    defaults (every transition at info level, rendered to stdout). The
    supervisor hands ``cli_settings()`` to each worker through the logging
    configuration the worker applies first thing (``logging.config.dictConfig``
    calls this as a filter factory), so the workers log as the command line
    asked before the app is even imported. The filter returned lets everything through.
    """
    configure_for_cli(**settings)
    return logging.Filter()


def configure_for_cli(*, verbose: bool, json: bool, quiet: bool = False) -> None:
    """Logs to stderr, so stdout stays clean for results (and for ``--json``).

    ``quiet`` (the demo) shows only errors: the failures it stages on purpose
    are already on screen as scenario output, not as warnings above it.
    """
    global _CLI_SETTINGS
    _CLI_SETTINGS = {"verbose": verbose, "json": json, "quiet": quiet}
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )

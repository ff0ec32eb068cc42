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


def session_logger(session_id: str) -> Any:
    """A logger with the session id bound once, as structlog recommends.

    The lazy proxy defers to whatever configuration the host sets, even after
    import; binding it resolves that configuration for this session.
    """
    return PROXY.bind(session_id=session_id)


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


def configure_for_cli(*, verbose: bool, json: bool, quiet: bool = False) -> None:
    """Logs to stderr, so stdout stays clean for results (and for ``--json``).

    ``quiet`` (the demo) shows only errors: the failures it stages on purpose
    are already on screen as scenario output, not as warnings above it.
    """
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

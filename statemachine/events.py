"""Transition events: the one hook logs, metrics, the inspector and hosts hang off.

Every transition of every session and tracked visitor becomes one
``TransitionEvent``. The structured log line is simply the first listener;
``session.add_listener(fn)`` and ``tracker.add_listener(fn)`` add more. An
event carries the token's fingerprint, never the token, and no user id, so a
listener may ship it anywhere: "which token went to whom, when" is answered
from events alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from statemachine import logs
from statemachine.reasons import FailureReason
from statemachine.states import State, Trigger


class TransitionEvent(NamedTuple):
    """One transition. A named tuple: built for every step of every visitor, it must be cheap."""

    session_id: str
    source: State
    dest: State
    trigger: Trigger
    attempt: int
    reason: FailureReason | None
    token_fingerprint: str | None
    at: float  # epoch seconds
    policy: str
    flow_started_at: float | None  # when the flow this transition belongs to began
    ends_flow: bool = False  # it brings a flow to rest: an outcome to count, a duration to time

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "source": self.source.value,
            "dest": self.dest.value,
            "trigger": self.trigger.value,
            "attempt": self.attempt,
            "reason": None if self.reason is None else self.reason.name,
            "token_fingerprint": self.token_fingerprint,
            "at": self.at,
            "policy": self.policy,
            "flow_started_at": self.flow_started_at,
            "ends_flow": self.ends_flow,
        }


Listener = Callable[[TransitionEvent], Any]
"""Sync or async; what it returns is ignored, what it raises is logged and changes nothing."""


def log_transition(event: TransitionEvent, logger: Any = None) -> None:
    """The built-in listener: one flat ``activation.transition`` event per transition.

    The core passes its session's logger, bound once with the session id
    (binding per event would cost more than the rest of a step). Emitted on
    the caller's context, so a host's ``structlog.contextvars`` (a request id
    bound by its middleware) lands on the line of the request that caused the
    transition, whichever request started the flow.
    """
    if logger is None:
        logger = logs.session_logger(event.session_id)
    logs.emit(
        logger.info,
        logs.TRANSITION,
        source=event.source._value_,
        dest=event.dest._value_,
        trigger=event.trigger._value_,
        attempt=event.attempt,
        reason=None if event.reason is None else event.reason._name_,
        token_fingerprint=event.token_fingerprint,
    )


DEFAULT_LISTENERS: Final[tuple[Listener, ...]] = (log_transition,)


def log_listener_error(error: Exception) -> None:
    """A listener failed: say so (its type only: the message is host code's) and go on."""
    logs.emit(logs.PROXY.error, logs.LISTENER_ERROR, error_type=type(error).__name__)


async def await_listeners(pending: list[Any]) -> None:
    """Await what async listeners returned; a failure is logged and changes nothing."""
    for awaitable in pending:
        try:
            await awaitable
        except Exception as error:  # noqa: BLE001 - a listener must not change an outcome
            log_listener_error(error)


def run_listeners(pending: list[Any]) -> None:
    """``await_listeners`` for blocking drivers."""
    from statemachine.calls import run_awaitable

    for awaitable in pending:
        try:
            run_awaitable(awaitable)
        except Exception as error:  # noqa: BLE001 - a listener must not change an outcome
            log_listener_error(error)

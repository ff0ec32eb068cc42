"""Transition events: the one hook logs, metrics, the inspector and hosts hang off.

Every transition of every session and tracked visitor becomes one
``TransitionEvent``. The core only appends its events to a list; the driver
that owns it takes them and hands them to its ``Listeners``: a session after
each step, a tracker once its store has accepted the step (and never the
events of a step lost to a conflict). The structured log line is simply the
first listener; ``session.add_listener(fn)`` and ``tracker.add_listener(fn)``
add more. An
event carries the token's fingerprint, never the token, and no user id, so a
listener may ship it anywhere: "which token went to whom, when" is answered
from events alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, cast

from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.results import HistoryEntry
from statemachine.protocol.states import State, Trigger
from statemachine.signals import logs


class TransitionEvent(NamedTuple):
    """One transition (a ``HistoryEntry``) and whose it was: what listeners hear.

    A named tuple: built for every step of every visitor, it must be cheap. The
    transition's own fields (``source``, ``dest``, ``trigger``, ``attempt``,
    ``reason``, ``at``) read through to ``transition``; a listener on the hot
    path reads ``event.transition`` once instead.
    """

    session_id: str
    transition: HistoryEntry
    token_fingerprint: str | None
    policy: str
    flow_started_at: float | None  # when the flow this transition belongs to began
    ends_flow: bool = False  # it brings a flow to rest: an outcome to count, a duration to time

    @property
    def source(self) -> State:
        return self.transition.source

    @property
    def dest(self) -> State:
        return self.transition.dest

    @property
    def trigger(self) -> Trigger:
        return self.transition.trigger

    @property
    def attempt(self) -> int:
        return self.transition.attempt

    @property
    def reason(self) -> FailureReason | None:
        return self.transition.reason

    @property
    def at(self) -> float:
        """Epoch seconds (the core stamps every transition it records)."""
        return cast(float, self.transition.at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            **self.transition.to_dict(),
            "token_fingerprint": self.token_fingerprint,
            "policy": self.policy,
            "flow_started_at": self.flow_started_at,
            "ends_flow": self.ends_flow,
        }


Listener = Callable[[TransitionEvent], Any]
"""Sync or async; what it returns is ignored, what it raises is logged and changes nothing."""


def log_transition(event: TransitionEvent, logger: Any = None) -> None:
    """The built-in listener: one flat ``activation.transition`` event per transition.

    ``Listeners`` passes a logger bound once with the session id (binding per
    event would cost more than the rest of a step) when it publishes for one
    session; a tracker's, which hears many visitors, binds per event. Emitted on
    the caller's context, so a host's ``structlog.contextvars`` (a request id
    bound by its middleware) lands on the line of the request that caused the
    transition, whichever request started the flow.
    """
    if logger is None:
        logger = logs.session_logger(event.session_id)
    source, dest, trigger, attempt, reason, _at = event.transition
    logs.emit(
        logger.info,
        logs.TRANSITION,
        source=source._value_,
        dest=dest._value_,
        trigger=trigger._value_,
        attempt=attempt,
        reason=None if reason is None else reason._name_,
        token_fingerprint=event.token_fingerprint,
    )


DEFAULT_LISTENERS: Final[tuple[Listener, ...]] = (log_transition,)


def log_listener_error(error: Exception) -> None:
    """A listener failed: say so (its type only: the message is host code's) and go on."""
    logs.emit(logs.PROXY.error, logs.LISTENER_ERROR, error_type=type(error).__name__)


class Listeners:
    """One driver's listeners, and how it publishes a step's events to them.

    How the built-in log line is bound is decided once, at construction (as
    structlog's ``TimeStamper`` picks its formatter up front): a session's
    ``Listeners(one_session=True)`` logs on one logger, bound with the session
    id on first use; a tracker's ``Listeners()``, which hears many visitors,
    binds each event's own session id. Adding
    or removing a listener rebuilds the tuple of calls; publishing only runs it.
    """

    __slots__ = ("_calls", "_log", "listeners")

    def __init__(self, *, one_session: bool = False) -> None:
        self._log: Listener = _session_log() if one_session else _log_any_session
        self.listeners: tuple[Listener, ...] = DEFAULT_LISTENERS
        self._calls: tuple[Listener, ...] = (self._log,)

    def add(self, listener: Listener) -> Listener:
        if not callable(listener):
            raise TypeError(f"a listener must be callable, got {type(listener).__name__}")
        self._calls = (*self._calls, self._call(listener))
        self.listeners = (*self.listeners, listener)
        return listener

    def remove(self, listener: Listener) -> None:
        listeners = tuple(x for x in self.listeners if x is not listener)
        self._calls = self._bind(listeners)
        self.listeners = listeners

    def publish(self, events: Sequence[TransitionEvent]) -> list[Any] | None:
        """Hand every event to every listener, in order; return what async ones gave back.

        A listener that raises is logged and changes nothing; the caller awaits
        (or runs) the returned awaitables its own way (None: there are none).
        """
        pending: list[Any] | None = None
        calls = self._calls
        for event in events:
            for call in calls:
                try:
                    value = call(event)
                except Exception as error:  # noqa: BLE001 - a listener must not change an outcome
                    log_listener_error(error)
                    continue
                if value is not None and inspect.isawaitable(value):
                    if pending is None:
                        pending = []
                    pending.append(value)
        return pending

    def publish_blocking(self, events: Sequence[TransitionEvent]) -> None:
        """``publish``, then run the async listeners to completion (blocking drivers)."""
        pending = self.publish(events) if events else None
        if pending:
            run_listeners(pending)

    def _bind(self, listeners: tuple[Listener, ...]) -> tuple[Listener, ...]:
        return tuple(map(self._call, listeners))

    def _call(self, listener: Listener) -> Listener:
        """What publishing calls for ``listener``: the bound log line, or its own function.

        An object may name, as ``_transition_call``, the plain function that
        does its work (the metrics listener in multiprocess mode): the loop
        then calls that, not the object, whose ``__call__`` costs a method
        look-up on every event.
        """
        if listener is log_transition:
            return self._log
        call: Listener = getattr(listener, "_transition_call", listener)
        return call


def _session_log() -> Listener:
    """The log line for one session, on a logger bound with its id on first use.

    A closure, not a method of ``Listeners``: a bound method kept in its own
    owner's tuple would make every session a reference cycle.
    """
    logger: Any = None
    info_off: bool | None = None  # decided on the first event, as binding once decided it

    def log(event: TransitionEvent) -> None:
        nonlocal logger, info_off
        if info_off is None:
            info_off = not logs.info_enabled_now()
        if info_off:  # info lines are filtered out: neither bind a logger nor build them
            return
        if logger is None:  # an idle session never pays for a logger
            logger = logs.session_logger(event.session_id)
        log_transition(event, logger)

    return log


def _log_any_session(event: TransitionEvent) -> None:
    """A tracker's log line: bound per event, and not even bound when info is filtered out."""
    if logs.info_enabled_now():
        log_transition(event)


async def await_listeners(pending: list[Any]) -> None:
    """Await what async listeners returned; a failure is logged and changes nothing."""
    for awaitable in pending:
        try:
            await awaitable
        except Exception as error:  # noqa: BLE001 - a listener must not change an outcome
            log_listener_error(error)


def run_listeners(pending: list[Any]) -> None:
    """``await_listeners`` for blocking drivers."""
    from statemachine.hostcalls._calls import run_awaitable

    for awaitable in pending:
        try:
            run_awaitable(awaitable)
        except Exception as error:  # noqa: BLE001 - a listener must not change an outcome
            log_listener_error(error)

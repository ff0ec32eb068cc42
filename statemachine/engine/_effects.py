"""What the sans-IO core asks a driver to do next, and the typed answers it takes back.

The core never performs I/O; it answers each event with an effect, and a
driver (asyncio or blocking) performs it and reports back with an answer
(``TokenReceived``/``TokenFailed``, ``Activated``/``ActivationFailed``,
``ELAPSED``). Host code's raw outcome (a value or an exception) is sorted into
those answers at the edge, by ``calls``, so the core never sees an exception. They are named
tuples: immutable, and several times cheaper to build than frozen dataclasses
on a path that runs for every step of every visitor.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from statemachine.protocol.options import AuthenticationOption
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.results import ActivationResult
from statemachine.protocol.states import Trigger


class FetchToken(NamedTuple):
    attempt: int
    timeout: float | None
    on_success: Trigger = Trigger.TOKEN_RECEIVED
    on_failure: Trigger = Trigger.TOKEN_FAILED

    @property
    def refresh(self) -> bool:
        """For an authenticated visitor, who stays authenticated meanwhile."""
        return self.on_success is Trigger.TOKEN_REFRESHED


class CallActivator(NamedTuple):
    option: AuthenticationOption
    attempt: int
    timeout: float | None
    on_success: Trigger
    on_failure: Trigger


class BackOff(NamedTuple):
    delay: float
    retry: int


class Finish(NamedTuple):
    result: ActivationResult


Effect = FetchToken | CallActivator | BackOff | Finish


class TokenReceived(NamedTuple):
    """The provider answered with a usable secured option."""

    option: AuthenticationOption


class TokenFailed(NamedTuple):
    """The provider failed (raised, timed out, answered nothing usable): why."""

    reason: FailureReason


class Activated(NamedTuple):
    """The activator accepted the option."""


class ActivationFailed(NamedTuple):
    """The activator refused, failed or timed out: why."""

    reason: FailureReason


class Elapsed(NamedTuple):
    """A backoff's delay is over."""


ACTIVATED: Final = Activated()
ELAPSED: Final = Elapsed()

Answer = TokenReceived | TokenFailed | Activated | ActivationFailed | Elapsed


class Outcome(NamedTuple):
    """What a driver observed while calling host code: a value or an error (sorted by ``calls``)."""

    value: object = None
    error: BaseException | None = None

"""Exceptions the engine raises or expects, each carrying a typed reason."""

from __future__ import annotations

from collections.abc import Iterable

from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.states import State, Trigger


class ActivationError(Exception):
    """Raised by an activator to say why the platform refused an activation.

    The message is the reason's own text unless a detail is given; callers
    must never put a token in ``detail``.
    """

    def __init__(self, reason: FailureReason, detail: str | None = None) -> None:
        if not isinstance(reason, FailureReason):
            raise TypeError(f"ActivationError needs a FailureReason, got {type(reason).__name__}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.name}: {detail or reason.message}")


class TransitionNotAllowed(Exception):
    """A trigger was fired in a state where the table has no row for it.

    Like h11's ``LocalProtocolError``: the caller broke the protocol, the
    machine did not move, and the message says what would have been allowed.
    """

    def __init__(self, state: State, trigger: Trigger, allowed: Iterable[Trigger]) -> None:
        self.state = state
        self.trigger = trigger
        self.allowed = tuple(allowed)
        names = ", ".join(t.value for t in self.allowed) or "nothing"
        super().__init__(
            f"'{trigger.value}' is not allowed in state '{state.value}' (allowed there: {names})"
        )

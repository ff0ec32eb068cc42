"""What a flow ends with, and the trail of transitions it took."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from statemachine.options import AuthenticationOption
from statemachine.reasons import FailureReason
from statemachine.states import State, Trigger

SUCCESS: Final = "authentication-success"
FAILURE: Final = "authentication-failure"
Status = Literal["authentication-success", "authentication-failure"]


@dataclass(frozen=True, slots=True)
class ActivationResult:
    """The outcome of one ``activate`` call, in the tag's vocabulary.

    ``repr``/``str`` go through the option's own ``repr``, which shows a
    fingerprint, so a logged result never carries the token.
    """

    status: Status
    option: AuthenticationOption
    state: State
    reason: FailureReason | None = None
    attempts: int = 0
    authenticated_until: float | None = None  # epoch seconds; None unless authenticated

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS

    def to_dict(self) -> dict[str, Any]:
        """Exactly what the tag hands its callback (raw token included, as the tag does)."""
        return self._shape(self.option.to_dict())

    def to_safe_dict(self) -> dict[str, Any]:
        """The tag's shape with the token as a fingerprint: for logs, screens and JSON output."""
        return self._shape(self.option.to_safe_dict())

    def _shape(self, option: dict[str, Any]) -> dict[str, Any]:
        authentication: dict[str, Any] = {"option": option, "status": self.status}
        if self.reason is not None:
            authentication["reason"] = self.reason.message
        return {"authentication": authentication}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One transition taken by a session; holds no token and no user data."""

    source: State
    dest: State
    trigger: Trigger
    attempt: int
    reason: FailureReason | None
    at: float | None = None  # epoch seconds; None only for entries built by hand

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.value,
            "dest": self.dest.value,
            "trigger": self.trigger.value,
            "attempt": self.attempt,
            "reason": None if self.reason is None else self.reason.name,
            "at": self.at,
        }

"""What a flow ends with, and the trail of transitions it took."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from statemachine.protocol.options import AuthenticationOption
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.states import State, Trigger

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


class HistoryEntry(NamedTuple):
    """One transition: the one shape a transition has, wherever it appears.

    The core keeps its history as these; a ``TransitionEvent`` carries one (with
    who and under which policy); a snapshot stores ``to_list()``; views and the
    inspector show ``to_dict()``. Holds no token and no user data. A named
    tuple: one is built on every step of every visitor.
    """

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

    def to_list(self) -> list[Any]:
        """The compact form a snapshot stores: ``[source, dest, trigger, attempt, reason, at]``."""
        return HistoryEntry.lists((self,))[0]

    @staticmethod
    def lists(entries: Iterable[HistoryEntry]) -> list[list[Any]]:
        """``to_list`` of every entry, in one pass.

        A tracked visitor's snapshot is written on every step, with up to its
        whole history: this reads the members' ``_value_``/``_name_`` (plain
        attributes), not the ``value``/``name`` properties.
        """
        return [
            [s._value_, d._value_, t._value_, attempt, None if r is None else r._name_, at]
            for s, d, t, attempt, r, at in entries
        ]

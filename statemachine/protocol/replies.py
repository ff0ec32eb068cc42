"""What the tracker answers: to a token request, to a report, and to a look.

Each reply knows its wire shape (``to_dict``), which is what a token endpoint
returns to the page. Like ``ActivationResult``, only ``to_dict`` of a token
reply holds the raw token (the page needs it to activate); ``repr``, ``str``
and ``to_safe_dict`` show its fingerprint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from statemachine.protocol.options import AuthenticationOption
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.results import HistoryEntry
from statemachine.protocol.states import State


class Answer(StrEnum):
    """What the page should do with the tag."""

    TOKEN = "token"  # activate with the secured option (a fresh token)
    ANONYMOUS = "anonymous"  # the policy fell back: activate anonymously
    DO_NOT_ACTIVATE = "do_not_activate"  # the policy refused (defensive), or the flow ended
    REFUSED = "refused"  # another flow holds the visitor: A login is already ongoing
    OVER_BUDGET = "over_budget"  # the visitor's minting budget is spent: nothing was minted


@dataclass(frozen=True, slots=True)
class TokenReply:
    answer: Answer
    state: State | None  # None when the store was not reached (down, or not needed)
    option: AuthenticationOption | None = None
    reason: FailureReason | None = None
    attempt: int = 0
    retry_after: float | None = None  # seconds until the budget allows a token (OVER_BUDGET)

    @property
    def status_code(self) -> int:
        """The HTTP status a token endpoint answers with."""
        if self.answer is Answer.REFUSED:
            return 409
        return 429 if self.answer is Answer.OVER_BUDGET else 200

    @property
    def headers(self) -> dict[str, str]:
        """Headers the token endpoint adds: ``Retry-After`` (whole seconds) when over budget."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def to_dict(self) -> dict[str, Any]:
        """The token endpoint's body; a secured option carries the raw token, for the tag."""
        return self._shape(None if self.option is None else self.option.to_dict())

    def to_safe_dict(self) -> dict[str, Any]:
        return self._shape(None if self.option is None else self.option.to_safe_dict())

    def _shape(self, option: dict[str, Any] | None) -> dict[str, Any]:
        if option is not None:
            return {"authenticationOption": option}
        message = (self.reason or FailureReason.SERVER_ERROR).message
        if self.answer is Answer.REFUSED:
            return {"reason": message}
        if self.answer is Answer.OVER_BUDGET:
            retry_after = int(self.headers["Retry-After"])
            return {"activate": False, "reason": message, "retry_after": retry_after}
        return {"activate": False, "reason": message}


@dataclass(frozen=True, slots=True)
class ReportReply:
    accepted: bool  # False: the report was not for the flow in flight, and changed nothing
    state: State | None
    next: AuthenticationOption | None = None  # the anonymous option when the policy falls back
    reason: FailureReason | None = None

    def to_dict(self) -> dict[str, Any]:
        shape: dict[str, Any] = {
            "state": None if self.state is None else self.state.value,
            "next": None if self.next is None else self.next.to_dict(),
            "accepted": self.accepted,
        }
        if self.reason is not None:
            shape["reason"] = self.reason.message
        return shape


@dataclass(frozen=True, slots=True)
class TrackerView:
    """One tracked visitor as the store holds it: no token, no user id."""

    session_id: str
    state: State
    attempts: int
    reason: FailureReason | None
    history: tuple[HistoryEntry, ...]
    flow_id: str | None
    since: float
    lease_until: float | None
    token_fingerprint: str | None
    policy: str
    authenticated_until: float | None = None  # epoch seconds; None unless authenticated
    mint_budget_left: int | None = None  # tokens it may still be minted now; None: no budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "state": self.state.value,
            "attempts": self.attempts,
            "reason": None if self.reason is None else self.reason.name,
            "history": [entry.to_dict() for entry in self.history],
            "flow_id": self.flow_id,
            "since": self.since,
            "lease_until": self.lease_until,
            "token_fingerprint": self.token_fingerprint,
            "policy": self.policy,
            "authenticated_until": self.authenticated_until,
            "mint_budget_left": self.mint_budget_left,
        }

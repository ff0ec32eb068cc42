"""Token errors: a typed reason, the check that failed, and never the token."""

from __future__ import annotations

from statemachine.protocol.reasons import FailureReason


class TokenError(Exception):
    """A token was refused (or could not be made); ``reason`` says why, for the engine."""

    def __init__(self, reason: FailureReason, check: str, detail: str) -> None:
        self.reason = reason
        self.check = check
        self.detail = detail
        super().__init__(f"{reason.name} ({check}): {detail}")


class KeyLoadError(ValueError):
    """A key could not be used for its role; the message names the role and the problem."""

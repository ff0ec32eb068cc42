"""Why an activation failed, in the platform's words where it has them."""

from __future__ import annotations

from enum import Enum


class FailureReason(Enum):
    TOKEN_UNAVAILABLE = "The token provider could not produce a token"
    INVALID_OPTION = "A valid authentication option must be provided"
    MALFORMED_TOKEN = "The token is malformed"
    DECRYPTION_FAILED = "The token could not be decrypted with the platform key"
    INVALID_SIGNATURE = "The token signature is invalid"
    UNSUPPORTED_ALGORITHM = "The token uses an unsupported algorithm"
    EXPIRED_TOKEN = "The token has expired"
    INVALID_CLAIMS = "The token claims are invalid"
    SERVER_ERROR = "Failed to fetch authentication with a server error"
    ACTIVATION_TIMEOUT = "The activation timed out"
    LOGIN_ONGOING = "A login is already ongoing"
    ALREADY_ACTIVATED = "Can't activate twice, please logout first"
    CANCELLED = "The activation was cancelled"
    WORKERS_EXHAUSTED = "Every worker for host calls is busy"
    MINT_BUDGET_SPENT = "Too many tokens were asked for this visitor; try again later"

    @property
    def message(self) -> str:
        """The human text, which is also what the tag puts in ``reason``."""
        return str(self.value)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_message(cls, text: str) -> FailureReason:
        """Map the tag's free-text reason back to a member.

        The tag's texts vary between versions, so matching is by exact message
        first, then by member name, then by a few known aliases; anything else
        is a server-side failure, which is what an unexplained refusal is.
        """
        if not isinstance(text, str):
            return cls.SERVER_ERROR
        normalized = " ".join(text.split()).rstrip(".").casefold()
        found = _BY_TEXT.get(normalized)
        if found is not None:
            return found
        by_name = cls.__members__.get(text.strip().upper())
        return by_name if by_name is not None else cls.SERVER_ERROR


_ALIASES = {
    "An activation is already ongoing": FailureReason.LOGIN_ONGOING,
    "Can't activate twice": FailureReason.ALREADY_ACTIVATED,
    "Malformed token": FailureReason.MALFORMED_TOKEN,
    "Invalid key": FailureReason.INVALID_SIGNATURE,
    "Invalid signature": FailureReason.INVALID_SIGNATURE,
    "Expired token": FailureReason.EXPIRED_TOKEN,
    "Token expired": FailureReason.EXPIRED_TOKEN,
}
_BY_TEXT: dict[str, FailureReason] = {
    **{m.message.rstrip(".").casefold(): m for m in FailureReason},
    **{k.casefold(): v for k, v in _ALIASES.items()},
}

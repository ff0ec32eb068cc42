"""Why an activation failed, in the platform's words where it has them, and what to check."""

from __future__ import annotations

from enum import Enum
from typing import Final


class FailureReason(Enum):
    TOKEN_UNAVAILABLE = "The token provider could not produce a token"
    INVALID_OPTION = "A valid authentication option must be provided"
    MALFORMED_TOKEN = "The token is malformed"
    DECRYPTION_FAILED = "The token could not be decrypted with the platform key"
    INVALID_SIGNATURE = "The token signature is invalid"
    UNSUPPORTED_ALGORITHM = "The token uses an unsupported algorithm"
    EXPIRED_TOKEN = "The token has expired"
    INVALID_CLAIMS = "The token claims are invalid"
    INVALID_CREDENTIALS = "Failed to authenticate visitor from credentials"
    SERVER_ERROR = "Failed to fetch authentication with a server error"
    ACTIVATION_TIMEOUT = "The activation timed out"
    LOGIN_ONGOING = "A login is already ongoing"
    ALREADY_ACTIVATED = "Can't activate twice, please logout first"
    CANCELLED = "The activation was cancelled"
    WORKERS_EXHAUSTED = "Every worker for host calls is busy"
    UNKNOWN = "The tag failed without saying why"
    MINT_BUDGET_SPENT = "Too many tokens were asked for this visitor; try again later"

    @property
    def message(self) -> str:
        """The human text, which is also what the tag puts in ``reason``."""
        return str(self.value)

    @property
    def remediation(self) -> str:
        """One line a support team can act on: what to check for this failure."""
        return REMEDIATIONS[self]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_message(cls, text: object) -> FailureReason:
        """Map the tag's free-text reason back to a member.

        The tag's texts vary between versions, so matching is by exact message
        first, then by member name, then by a few known aliases and the
        platform's published prefixes. Anything else is ``UNKNOWN``: a text we
        cannot read is not evidence of any particular fault.
        """
        if not isinstance(text, str):
            return cls.UNKNOWN
        normalized = " ".join(text.split()).rstrip(".…").casefold()
        found = _BY_TEXT.get(normalized)
        if found is not None:
            return found
        for prefix, reason in _PREFIXES:
            if normalized.startswith(prefix):
                return reason
        by_name = cls.__members__.get(text.strip().upper())
        return by_name if by_name is not None else cls.UNKNOWN


REMEDIATIONS: Final[dict[FailureReason, str]] = {
    FailureReason.TOKEN_UNAVAILABLE: (
        "Check the token endpoint: is the visitor signed in, and does the backend's "
        "provider return a token in time?"
    ),
    FailureReason.INVALID_OPTION: (
        "Have the token provider return {authenticationOption: {type, token}} with a "
        "non-empty token."
    ),
    FailureReason.MALFORMED_TOKEN: (
        "Send the compact JWE as issued (five dot-separated parts), untrimmed and unquoted."
    ),
    FailureReason.DECRYPTION_FAILED: (
        "Encrypt with the platform's current public key, RSA-OAEP-256 and A256GCM."
    ),
    FailureReason.INVALID_SIGNATURE: (
        "Sign with the brand private key whose public half is registered on the platform (RS256)."
    ),
    FailureReason.UNSUPPORTED_ALGORITHM: (
        "Use RSA-OAEP-256 with A256GCM for the JWE and RS256 for the inner JWS."
    ),
    FailureReason.EXPIRED_TOKEN: (
        "Mint a fresh token per request (about a minute of life) and check the server's clock."
    ),
    FailureReason.INVALID_CLAIMS: (
        "Check the claims: https://iadvize.com/userId a string of 1-255 characters, iss, exp."
    ),
    FailureReason.INVALID_CREDENTIALS: (
        "Check that secured authentication is enabled for the site, then the keys and the "
        "token's claims."
    ),
    FailureReason.SERVER_ERROR: (
        "The platform or the token endpoint failed: check their status and logs, then retry."
    ),
    FailureReason.ACTIVATION_TIMEOUT: (
        "The activation did not answer in time: check the network path to the platform."
    ),
    FailureReason.LOGIN_ONGOING: (
        "Await the first activate() before calling it again; another tab may be signing in."
    ),
    FailureReason.ALREADY_ACTIVATED: ("Log out first (iAdvize.logout) before activating again."),
    FailureReason.CANCELLED: (
        "The flow was cancelled (logout, shutdown or a closed tab): the next page load retries."
    ),
    FailureReason.WORKERS_EXHAUSTED: (
        "Host calls are saturated: check the token provider's latency and the worker bound."
    ),
    FailureReason.MINT_BUDGET_SPENT: (
        "Look for a page that calls activate() in a loop or refreshes too often; wait for "
        "Retry-After."
    ),
    FailureReason.UNKNOWN: (
        "The tag gave no reason: run 'secured-activation token verify' on a fresh token and "
        "check the keys."
    ),
}

_ALIASES = {
    "An activation is already ongoing": FailureReason.LOGIN_ONGOING,
    "Can't activate twice": FailureReason.ALREADY_ACTIVATED,
    "Malformed token": FailureReason.MALFORMED_TOKEN,
    "Invalid key": FailureReason.INVALID_SIGNATURE,
    "Invalid signature": FailureReason.INVALID_SIGNATURE,
    "Expired token": FailureReason.EXPIRED_TOKEN,
    "Token expired": FailureReason.EXPIRED_TOKEN,
}
_PREFIXES: Final = (
    # The platform appends details to these; the start says which failure it is.
    ("failed to authenticate visitor from credentials", FailureReason.INVALID_CREDENTIALS),
    ("failed to fetch authentication", FailureReason.SERVER_ERROR),
    ("can't activate twice", FailureReason.ALREADY_ACTIVATED),
    ("a valid authentication option must be provided", FailureReason.INVALID_OPTION),
)
_BY_TEXT: dict[str, FailureReason] = {
    **{m.message.rstrip(".").casefold(): m for m in FailureReason},
    **{k.casefold(): v for k, v in _ALIASES.items()},
}

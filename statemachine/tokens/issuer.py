"""Minting the token the platform expects: a JWS (RS256) inside a JWE (RSA-OAEP-256/A256GCM)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from jwcrypto import jwe, jws

from statemachine.reasons import FailureReason
from statemachine.tokens.claims import (
    USER_ID,
    VISITOR_DATA,
    user_id_problem,
    visitor_data_problem,
)
from statemachine.tokens.errors import TokenError
from statemachine.tokens.keys import KeySource, load_key

SIGNING_ALG: Final = "RS256"
KEY_ALG: Final = "RSA-OAEP-256"
CONTENT_ALG: Final = "A256GCM"
MAX_LIFETIME: Final = 24 * 3600

_JWS_HEADER: Final = json.dumps({"alg": SIGNING_ALG, "typ": "JWT"}, separators=(",", ":"))
_JWE_HEADER: Final = json.dumps(
    {"alg": KEY_ALG, "enc": CONTENT_ALG, "cty": "JWT"}, separators=(",", ":")
)


class TokenIssuer:
    """The brand backend's half: mints one short-lived token per sign-in.

    ``issue`` is a ready token provider: ``functools.partial(issuer.issue, user_id)``.
    """

    __slots__ = ("_clock", "_encryption_key", "_signing_key", "issuer", "lifetime")

    def __init__(
        self,
        signing_key: KeySource,
        encryption_key: KeySource,
        issuer: str,
        lifetime: int = 60,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(issuer, str) or not issuer.strip():
            raise ValueError("issuer must be a non-empty string (it becomes the 'iss' claim)")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float):
            raise ValueError(f"lifetime must be a number of seconds, got {type(lifetime).__name__}")
        if not 0 < lifetime <= MAX_LIFETIME:
            raise ValueError(
                f"lifetime must be between 1 and {MAX_LIFETIME} seconds, got {lifetime}"
            )
        self._signing_key = load_key(signing_key, role="signing key (brand private)", private=True)
        self._encryption_key = load_key(
            encryption_key, role="encryption key (platform public)", private=False
        )
        self.issuer = issuer
        self.lifetime = int(lifetime)
        self._clock = clock

    def issue(self, user_id: str, visitor_data: Mapping[str, Any] | None = None) -> str:
        problem = user_id_problem(user_id)
        if problem is None and visitor_data is not None:
            problem = visitor_data_problem(visitor_data)
        if problem is not None:
            raise TokenError(FailureReason.INVALID_CLAIMS, "claims", problem)
        now = int(self._clock())
        claims: dict[str, Any] = {USER_ID: user_id}
        if visitor_data is not None:
            claims[VISITOR_DATA] = dict(visitor_data)
        claims.update(iss=self.issuer, iat=now, exp=now + self.lifetime)
        signed = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
        signed.add_signature(self._signing_key, None, _JWS_HEADER)
        encrypted = jwe.JWE(signed.serialize(compact=True).encode(), _JWE_HEADER)
        encrypted.add_recipient(self._encryption_key)
        return str(encrypted.serialize(compact=True))

    def __call__(self, user_id: str, visitor_data: Mapping[str, Any] | None = None) -> str:
        return self.issue(user_id, visitor_data)

    def __repr__(self) -> str:
        return f"TokenIssuer(issuer={self.issuer!r}, lifetime={self.lifetime})"

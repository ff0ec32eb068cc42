"""Minting the token the platform expects: a JWS (RS256) inside a JWE (RSA-OAEP-256/A256GCM)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from jwcrypto.common import base64url_encode
from jwcrypto.jwa import JWA

from statemachine.protocol.reasons import FailureReason
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

CEK_BITS: Final = 256

# jwcrypto's algorithm layer does every cryptographic operation; its JWS/JWE
# object layer is skipped because each object deep-copies a header registry,
# which cost a third on top of the RSA work (see bench/RESULTS.md). Headers are
# fixed, so the compact serialisation is a join of base64url segments.
SIGNER: Final = JWA.signing_alg(SIGNING_ALG)
KEY_WRAP: Final = JWA.keymgmt_alg(KEY_ALG)
CONTENT: Final = JWA.encryption_alg(CONTENT_ALG)

_JWS_HEADER_B64: Final = base64url_encode(
    json.dumps({"alg": SIGNING_ALG, "typ": "JWT"}, separators=(",", ":"))
)
_JWE_HEADER_B64: Final = base64url_encode(
    json.dumps({"alg": KEY_ALG, "enc": CONTENT_ALG, "cty": "JWT"}, separators=(",", ":"))
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
        signing_input = (
            f"{_JWS_HEADER_B64}.{base64url_encode(json.dumps(claims, separators=(',', ':')))}"
        )
        signature = SIGNER.sign(self._signing_key, signing_input.encode("ascii"))
        signed = f"{signing_input}.{base64url_encode(signature)}"
        wrapped = KEY_WRAP.wrap(self._encryption_key, CEK_BITS, None, None)
        # RFC 7516 §5.1: the AAD is the ASCII of the encoded protected header.
        iv, ciphertext, tag = CONTENT.encrypt(
            wrapped["cek"], _JWE_HEADER_B64.encode("ascii"), signed.encode("ascii")
        )
        return ".".join(
            (
                _JWE_HEADER_B64,
                base64url_encode(wrapped["ek"]),
                base64url_encode(iv),
                base64url_encode(ciphertext),
                base64url_encode(tag),
            )
        )

    def __call__(self, user_id: str, visitor_data: Mapping[str, Any] | None = None) -> str:
        return self.issue(user_id, visitor_data)

    def __repr__(self) -> str:
        return f"TokenIssuer(issuer={self.issuer!r}, lifetime={self.lifetime})"

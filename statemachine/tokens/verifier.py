"""Verifying a token as the platform does, check by check, offline.

The checks run in the platform's order (format, algorithms, decryption,
signature, claims, expiry); the first to fail decides the ``FailureReason``.
Cheap structural checks come before any cryptography, so hostile input is
refused in microseconds.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from jwcrypto.common import JWException

from statemachine.protocol.reasons import FailureReason
from statemachine.tokens.claims import (
    USER_ID,
    VISITOR_DATA,
    Claims,
    user_id_problem,
    visitor_data_problem,
)
from statemachine.tokens.errors import TokenError
from statemachine.tokens.issuer import (
    CEK_BITS,
    CONTENT,
    CONTENT_ALG,
    KEY_ALG,
    KEY_WRAP,
    SIGNER,
    SIGNING_ALG,
)
from statemachine.tokens.keys import KeySource, load_key

MAX_TOKEN_CHARS: Final = 16 * 1024
MAX_JSON_DEPTH: Final = 16
"""A header or claim set is a few flat objects; visitorData nests one level."""
DEFAULT_MAX_LIFETIME: Final = 900.0
"""Seconds a token may live (exp - iat, or exp - now): the platform recommends 60."""
CHECKS: Final = ("format", "algorithms", "decryption", "signature", "claims", "expiry")
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]*")

Recorder = Callable[[str, str], None]


def _ignore(_check: str, _detail: str) -> None:
    return None


def _unb64(segment: str) -> bytes:
    """Decode base64url, refusing every spelling but the canonical one.

    Lenient decoders ignore the unused low bits of the last character, so one
    token has many spellings, each with its own fingerprint: replay and
    de-duplication keyed on a token would then be defeated.
    """
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("non-canonical base64url")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODE: Final = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_no_constant
).decode
"""Made once: ``json.loads`` with hooks builds a new decoder and scanner on every call."""


def strict_json(data: bytes) -> Any:
    """JSON as JOSE requires it: UTF-8, no duplicate keys, no NaN, bounded nesting.

    Python's ``json`` would guess UTF-16 or UTF-32, keep the last of two equal
    keys (so a header could say RSA1_5 and then RSA-OAEP-256), accept NaN, and
    recurse until ``RecursionError``: each is refused with ``ValueError``.
    """
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if text.startswith("\ufeff"):
        raise ValueError("a byte-order mark is not JSON")
    if _too_deep(text):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH}")
    try:
        return _DECODE(text)
    except RecursionError:  # pragma: no cover - _too_deep refuses first
        raise ValueError("nested too deeply") from None


def _too_deep(text: str) -> bool:
    """Whether brackets outside strings nest past ``MAX_JSON_DEPTH`` (one linear pass)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _b64_json(segment: str) -> Any:
    return strict_json(_unb64(segment))


_CRYPTO_REFUSALS: Final = (JWException, InvalidTag, InvalidSignature, ValueError, TypeError)


def _is_time(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _fail(reason: FailureReason, check: str, detail: str) -> TokenError:
    return TokenError(reason, check, detail)


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Every check in order, with the first failure's reason (``None`` when valid)."""

    checks: tuple[CheckResult, ...]
    reason: FailureReason | None
    claims: Claims | None = field(default=None, repr=False)

    @property
    def valid(self) -> bool:
        return self.reason is None


class TokenVerifier:
    """The platform's half: decrypt with its private key, verify with the brand's public key."""

    __slots__ = (
        "_clock",
        "_decryption_key",
        "_verification_key",
        "issuer",
        "leeway",
        "max_lifetime",
    )

    def __init__(
        self,
        decryption_key: KeySource,
        verification_key: KeySource,
        issuer: str | None = None,
        leeway: float = 5.0,
        *,
        max_lifetime: float = DEFAULT_MAX_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (
            isinstance(leeway, bool)
            or not isinstance(leeway, int | float)
            or not 0 <= leeway <= 300
        ):
            raise ValueError(f"leeway must be between 0 and 300 seconds, got {leeway!r}")
        if (
            isinstance(max_lifetime, bool)
            or not isinstance(max_lifetime, int | float)
            or not 1 <= max_lifetime <= 86_400
        ):
            raise ValueError(
                f"max_lifetime must be between 1 and 86400 seconds, got {max_lifetime!r}"
            )
        if issuer is not None and (not isinstance(issuer, str) or not issuer):
            raise ValueError("issuer must be a non-empty string or None")
        self._decryption_key = load_key(
            decryption_key, role="decryption key (platform private)", private=True
        )
        self._verification_key = load_key(
            verification_key, role="verification key (brand public)", private=False
        )
        self.issuer = issuer
        self.leeway = float(leeway)
        self.max_lifetime = float(max_lifetime)
        self._clock = clock

    def __repr__(self) -> str:
        return f"TokenVerifier(issuer={self.issuer!r}, leeway={self.leeway:g})"

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; otherwise ``TokenError`` with the failing check."""
        return self._run(token, _ignore)

    def diagnose(self, token: str) -> Diagnosis:
        """Run every check in order and report each, stopping at the first failure."""
        results: list[CheckResult] = []

        def record(check: str, detail: str) -> None:
            results.append(CheckResult(check, True, detail))

        try:
            claims = self._run(token, record)
        except TokenError as error:
            results.append(CheckResult(error.check, False, error.detail))
            return Diagnosis(tuple(results), error.reason)
        return Diagnosis(tuple(results), None, claims)

    def _run(self, token: object, record: Recorder) -> Claims:
        segments, header = self._check_format(token)
        record("format", "five base64url segments, JSON header")
        self._check_outer_algorithms(header)
        record("algorithms", f"{KEY_ALG} / {CONTENT_ALG}")
        inner = self._decrypt(segments)
        record("decryption", "opened with the platform private key")
        payload = self._verify_signature(inner)
        record("signature", f"{SIGNING_ALG}, verified with the brand public key")
        claims = self._check_claims(payload)
        record("claims", "userId present and valid" + (", issuer matches" if self.issuer else ""))
        self._check_expiry(payload)
        record("expiry", "not expired")
        return claims

    @staticmethod
    def _check_format(token: object) -> tuple[list[str], dict[str, Any]]:
        """The five segments and the decoded protected header, parsed once for every check."""
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise _fail(FailureReason.MALFORMED_TOKEN, "format", "not ASCII text") from None
        if not isinstance(token, str):
            raise _fail(
                FailureReason.MALFORMED_TOKEN,
                "format",
                f"expected a string, got {type(token).__name__}",
            )
        if len(token) > MAX_TOKEN_CHARS:
            raise _fail(
                FailureReason.MALFORMED_TOKEN,
                "format",
                f"{len(token)} characters, over the {MAX_TOKEN_CHARS} limit",
            )
        token = token.strip()
        segments = token.split(".")
        if len(segments) != 5:
            raise _fail(
                FailureReason.MALFORMED_TOKEN,
                "format",
                f"a compact JWE has 5 segments, this has {len(segments)}",
            )
        for index, segment in enumerate(segments):
            if not _SEGMENT.fullmatch(segment):
                raise _fail(
                    FailureReason.MALFORMED_TOKEN, "format", f"segment {index + 1} is not base64url"
                )
        if not segments[0] or not segments[2] or not segments[3] or not segments[4]:
            raise _fail(FailureReason.MALFORMED_TOKEN, "format", "a required segment is empty")
        try:
            header = _b64_json(segments[0])
        except (binascii.Error, ValueError):
            raise _fail(
                FailureReason.MALFORMED_TOKEN, "format", "the header is not base64url JSON"
            ) from None
        if not isinstance(header, dict):
            raise _fail(FailureReason.MALFORMED_TOKEN, "format", "the header is not a JSON object")
        return segments, header

    @staticmethod
    def _check_outer_algorithms(header: dict[str, Any]) -> None:
        alg, enc = header.get("alg"), header.get("enc")
        if alg != KEY_ALG or enc != CONTENT_ALG:
            raise _fail(
                FailureReason.UNSUPPORTED_ALGORITHM,
                "algorithms",
                f"expected alg {KEY_ALG} and enc {CONTENT_ALG}, got alg {alg!r} and enc {enc!r}",
            )
        for unsupported in ("zip", "crit"):
            if unsupported in header:
                raise _fail(
                    FailureReason.UNSUPPORTED_ALGORITHM,
                    "algorithms",
                    f"the '{unsupported}' header is not supported",
                )

    def _decrypt(self, segments: list[str]) -> bytes:
        header, wrapped, iv, ciphertext, tag = segments
        try:
            wrapped_key, nonce, sealed, mac = (_unb64(x) for x in (wrapped, iv, ciphertext, tag))
        except (binascii.Error, ValueError):
            raise _fail(
                FailureReason.MALFORMED_TOKEN, "decryption", "a segment is not base64url"
            ) from None
        if len(nonce) != 12 or len(mac) != 16:
            raise _fail(
                FailureReason.MALFORMED_TOKEN,
                "decryption",
                "A256GCM needs a 96-bit IV and a 128-bit tag",
            )
        try:
            cek = KEY_WRAP.unwrap(self._decryption_key, CEK_BITS, wrapped_key, None)
            # RFC 7516 §5.2: the AAD is the encoded protected header exactly as sent.
            return bytes(CONTENT.decrypt(cek, header.encode("ascii"), nonce, sealed, mac))
        except _CRYPTO_REFUSALS:
            raise _fail(
                FailureReason.DECRYPTION_FAILED,
                "decryption",
                "cannot be opened with the platform private key "
                "(encrypted for another key, or altered)",
            ) from None

    def _verify_signature(self, inner: bytes) -> dict[str, Any]:
        try:
            text = inner.decode("ascii")
        except UnicodeDecodeError:
            raise _fail(
                FailureReason.INVALID_SIGNATURE, "signature", "the payload is not a signed JWS"
            ) from None
        segments = text.split(".")
        if len(segments) != 3 or not all(_SEGMENT.fullmatch(s) for s in segments):
            raise _fail(
                FailureReason.INVALID_SIGNATURE,
                "signature",
                "the payload is not a compact JWS (unsigned claims?)",
            )
        try:
            header = _b64_json(segments[0])
        except (binascii.Error, ValueError):
            raise _fail(
                FailureReason.MALFORMED_TOKEN, "signature", "the JWS header is not base64url JSON"
            ) from None
        alg = header.get("alg") if isinstance(header, dict) else None
        if alg in (None, "none", "None", "NONE") or not segments[2]:
            raise _fail(FailureReason.INVALID_SIGNATURE, "signature", "the claims are unsigned")
        if alg != SIGNING_ALG or "crit" in header:
            raise _fail(
                FailureReason.UNSUPPORTED_ALGORITHM,
                "signature",
                f"expected alg {SIGNING_ALG}, got {alg!r}",
            )
        try:
            signature, claims_json = _unb64(segments[2]), _unb64(segments[1])
        except (binascii.Error, ValueError):
            raise _fail(
                FailureReason.MALFORMED_TOKEN, "signature", "the JWS is not base64url"
            ) from None
        try:
            SIGNER.verify(
                self._verification_key, f"{segments[0]}.{segments[1]}".encode("ascii"), signature
            )
        except _CRYPTO_REFUSALS:
            raise _fail(
                FailureReason.INVALID_SIGNATURE,
                "signature",
                "does not verify with the brand public key (signed by another key, or altered)",
            ) from None
        try:
            payload = strict_json(claims_json)
        except ValueError:
            raise _fail(FailureReason.INVALID_CLAIMS, "claims", "the claims are not JSON") from None
        if not isinstance(payload, dict):
            raise _fail(FailureReason.INVALID_CLAIMS, "claims", "the claims are not a JSON object")
        return payload

    def _check_claims(self, payload: dict[str, Any]) -> Claims:
        if USER_ID not in payload:
            raise _fail(FailureReason.INVALID_CLAIMS, "claims", f"missing {USER_ID}")
        problem = user_id_problem(payload[USER_ID])
        if problem is None and payload.get(VISITOR_DATA) is not None:
            problem = visitor_data_problem(payload[VISITOR_DATA])
        if problem is not None:
            raise _fail(FailureReason.INVALID_CLAIMS, "claims", problem)
        exp = payload.get("exp")
        if not _is_time(exp):
            raise _fail(FailureReason.INVALID_CLAIMS, "claims", "exp is missing or not a number")
        if self.issuer is not None and payload.get("iss") != self.issuer:
            raise _fail(
                FailureReason.INVALID_CLAIMS,
                "claims",
                f"issuer {payload.get('iss')!r} is not the expected {self.issuer!r}",
            )
        for name in ("iat", "nbf"):
            value = payload.get(name)
            if value is not None and not _is_time(value):
                raise _fail(FailureReason.INVALID_CLAIMS, "claims", f"{name} is not a number")
        try:
            return Claims.from_payload(payload)
        except (OverflowError, OSError, ValueError):
            raise _fail(FailureReason.INVALID_CLAIMS, "claims", "a date is out of range") from None

    def _check_expiry(self, payload: dict[str, Any]) -> None:
        now = self._clock()
        iat = payload.get("iat")
        if iat is not None and iat - self.leeway > now:
            raise _fail(FailureReason.INVALID_CLAIMS, "expiry", "issued in the future (iat)")
        start = now if iat is None else min(iat, now)
        if payload["exp"] - start > self.max_lifetime + self.leeway:
            raise _fail(
                FailureReason.INVALID_CLAIMS,
                "expiry",
                f"lives {payload['exp'] - start:.0f} s, over the {self.max_lifetime:g} s maximum",
            )
        if payload["exp"] + self.leeway < now:
            raise _fail(
                FailureReason.EXPIRED_TOKEN,
                "expiry",
                f"expired {now - payload['exp']:.0f} s ago (leeway {self.leeway:g} s)",
            )
        nbf = payload.get("nbf")
        if nbf is not None and nbf - self.leeway > now:
            raise _fail(FailureReason.INVALID_CLAIMS, "expiry", "not valid yet (nbf in the future)")

"""Hostile tokens: nesting, malleable base64, duplicate keys, non-UTF-8, absurd dates.

Every token here is built byte by byte with ``cryptography`` and the keys of
this test session, so each reaches exactly the check it targets.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from statemachine import ActivationError, AuthenticationOption, FailureReason, LocalActivator
from statemachine.tokens import TokenError, TokenVerifier
from statemachine.tokens.claims import USER_ID

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
OUTER = b'{"alg":"RSA-OAEP-256","enc":"A256GCM","cty":"JWT"}'
INNER = b'{"alg":"RS256","typ":"JWT"}'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(brand_key: Any, claims: bytes, header: bytes = INNER) -> bytes:
    signing_input = f"{b64(header)}.{b64(claims)}".encode()
    signature = brand_key.get_op_key("sign").sign(
        signing_input, padding.PKCS1v15(), hashes.SHA256()
    )
    return signing_input + b"." + b64(signature).encode()


def seal(platform_key: Any, plaintext: bytes, header: bytes = OUTER) -> str:
    encoded_header = b64(header)
    cek, iv = os.urandom(32), os.urandom(12)
    wrapped = platform_key.get_op_key("wrapKey").encrypt(cek, OAEP)
    sealed = AESGCM(cek).encrypt(iv, plaintext, encoded_header.encode())
    return ".".join([encoded_header, b64(wrapped), b64(iv), b64(sealed[:-16]), b64(sealed[-16:])])


def claims(**extra: Any) -> bytes:
    now = int(time.time())
    payload = {USER_ID: "user-1", "iss": "https://brand.example", "iat": now, "exp": now + 60}
    payload.update(extra)
    return json.dumps({k: v for k, v in payload.items() if v is not None}).encode()


def token(brand_key: Any, platform_key: Any, body: bytes | None = None, **kw: Any) -> str:
    return seal(platform_key, sign(brand_key, body or claims()), **kw)


def refused(verifier: TokenVerifier, value: str) -> TokenError:
    started = time.monotonic()
    with pytest.raises(TokenError) as caught:
        verifier.verify(value)
    assert time.monotonic() - started < 1.0
    diagnosis = verifier.diagnose(value)  # never raises either
    assert diagnosis.reason is caught.value.reason
    return caught.value


def test_the_builder_makes_valid_tokens(
    verifier: TokenVerifier, brand_key: Any, platform_key: Any
) -> None:
    assert verifier.verify(token(brand_key, platform_key)).user_id == "user-1"


# -- 6: nesting ------------------------------------------------------------------
NESTED = b"[" * 1000 + b"]" * 1000


def test_deeply_nested_outer_header_is_malformed_not_a_recursion_error(
    verifier: TokenVerifier,
) -> None:
    header = b'{"alg":' + NESTED + b"}"
    value = ".".join([b64(header), "AAAA", b64(b"x" * 12), "AAAA", b64(b"y" * 16)])
    assert len(value) < 3_000
    assert refused(verifier, value).reason is FailureReason.MALFORMED_TOKEN


def test_deeply_nested_inner_header_and_claims(
    verifier: TokenVerifier, brand_key: Any, platform_key: Any
) -> None:
    inner = sign(brand_key, claims(), header=b'{"alg":"RS256","x":' + NESTED + b"}")
    assert refused(verifier, seal(platform_key, inner)).reason is FailureReason.MALFORMED_TOKEN
    body = claims()[:-1] + b', "deep": ' + NESTED + b"}"
    error = refused(verifier, token(brand_key, platform_key, body))
    assert error.reason is FailureReason.INVALID_CLAIMS


def test_local_activator_does_not_retry_a_malformed_token(verifier: TokenVerifier) -> None:
    header = b'{"alg":' + NESTED + b"}"
    value = ".".join([b64(header), "AAAA", b64(b"x" * 12), "AAAA", b64(b"y" * 16)])
    with pytest.raises(ActivationError) as caught:
        LocalActivator(verifier).activate(AuthenticationOption.secured(value))
    assert caught.value.reason is FailureReason.MALFORMED_TOKEN  # not SERVER_ERROR (retried)


# -- 7: malleability ---------------------------------------------------------------
def test_non_canonical_base64_spellings_are_refused(
    verifier: TokenVerifier, brand_key: Any, platform_key: Any
) -> None:
    good = token(brand_key, platform_key)
    segments = good.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spellings = 0
    for index, segment in enumerate(segments):
        if len(segment) % 4 in (2, 3):  # a last character with unused low bits
            last = segment[-1]
            for char in alphabet:
                if char == last:
                    continue
                candidate = segment[:-1] + char
                padded = candidate + "=" * (-len(candidate) % 4)
                if base64.urlsafe_b64decode(padded) != base64.urlsafe_b64decode(
                    segment + "=" * (-len(segment) % 4)
                ):
                    continue  # a different value, not another spelling
                spellings += 1
                altered = [*segments]
                altered[index] = candidate
                assert refused(verifier, ".".join(altered)).reason is (
                    FailureReason.MALFORMED_TOKEN
                )
    assert spellings > 0


# -- 8: leniency -------------------------------------------------------------------
def test_duplicate_header_keys_are_refused(verifier: TokenVerifier, platform_key: Any) -> None:
    header = b'{"alg":"RSA1_5","alg":"RSA-OAEP-256","enc":"A256GCM"}'
    value = seal(platform_key, b"x.y.z", header=header)
    assert refused(verifier, value).reason is FailureReason.MALFORMED_TOKEN


def test_duplicate_claims_are_refused(
    verifier: TokenVerifier, brand_key: Any, platform_key: Any
) -> None:
    body = claims()[:-1] + f', "{USER_ID}": "someone-else"}}'.encode()
    assert refused(verifier, token(brand_key, platform_key, body)).reason is (
        FailureReason.INVALID_CLAIMS
    )


def test_utf16_header_is_refused(verifier: TokenVerifier, platform_key: Any) -> None:
    value = seal(platform_key, b"x.y.z", header=OUTER.decode().encode("utf-16"))
    assert refused(verifier, value).reason is FailureReason.MALFORMED_TOKEN


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"exp": int(time.time()) + 100 * 365 * 86400}, FailureReason.INVALID_CLAIMS),
        ({"iat": int(time.time()) + 365 * 86400}, FailureReason.INVALID_CLAIMS),
        ({"iat": None, "exp": int(time.time()) + 86400}, FailureReason.INVALID_CLAIMS),
        ({USER_ID: "user\x00one"}, FailureReason.INVALID_CLAIMS),
        ({USER_ID: "user\none"}, FailureReason.INVALID_CLAIMS),
        ({USER_ID: "user\u2028one"}, FailureReason.INVALID_CLAIMS),
    ],
    ids=[
        "exp-a-century-ahead",
        "iat-a-year-ahead",
        "no-iat-exp-a-day-ahead",
        "nul",
        "newline",
        "line-separator",
    ],
)
def test_absurd_claims_are_refused(
    verifier: TokenVerifier, brand_key: Any, platform_key: Any, extra: Any, reason: Any
) -> None:
    assert refused(verifier, token(brand_key, platform_key, claims(**extra))).reason is reason


def test_nan_dates_are_refused(verifier: TokenVerifier, brand_key: Any, platform_key: Any) -> None:
    body = claims()[:-1] + b', "nbf": NaN}'
    assert refused(verifier, token(brand_key, platform_key, body)).reason is (
        FailureReason.INVALID_CLAIMS
    )


def test_max_lifetime_is_configurable(brand_key: Any, platform_key: Any) -> None:
    day = int(time.time()) + 86_000
    relaxed = TokenVerifier(platform_key, brand_key, max_lifetime=86_400)
    assert relaxed.verify(token(brand_key, platform_key, claims(exp=day))).user_id == "user-1"
    with pytest.raises(ValueError, match="max_lifetime"):
        TokenVerifier(platform_key, brand_key, max_lifetime=0)

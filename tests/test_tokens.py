"""Tokens: round trip, interoperability with an independent JOSE implementation,
every refusal from a token built to fail exactly that check, hostile input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe as rfc_jwe
from joserfc import jws as rfc_jws
from joserfc.jwk import RSAKey
from jwcrypto import jwe, jwk

from statemachine import FailureReason
from statemachine.tokens import (
    MAX_TOKEN_CHARS,
    USER_ID,
    KeyLoadError,
    TokenError,
    TokenIssuer,
    TokenVerifier,
    generate_rsa,
    load_key,
    write_key_pairs,
)

ISS = "https://brand.example"
OUTER = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "cty": "JWT"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc_key(key: Any, private: bool = True) -> RSAKey:
    return RSAKey.import_key(key.export_to_pem(private_key=private, password=None))


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {USER_ID: "user-1", "iss": ISS, "iat": now, "exp": now + 60}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def mint_with_joserfc(
    brand_key: Any, platform_key: Any, payload: dict[str, Any], *, alg: str = "RS256"
) -> str:
    """An independent implementation builds the token (RSA-OAEP-256 enabled explicitly)."""
    signed = rfc_jws.serialize_compact(
        {"alg": alg}, json.dumps(payload), rfc_key(brand_key), algorithms=[alg]
    )
    return rfc_jwe.encrypt_compact(
        OUTER, signed, rfc_key(platform_key, False), algorithms=["RSA-OAEP-256", "A256GCM"]
    )


def encrypt_raw(platform_key: Any, plaintext: bytes, header: dict[str, Any] = OUTER) -> str:
    algs = [header["alg"], header["enc"]]
    token = jwe.JWE(plaintext, json.dumps(header), algs=algs)
    token.add_recipient(jwk.JWK(**platform_key.export_public(as_dict=True)))
    return str(token.serialize(compact=True))


def refused(verifier: TokenVerifier, token: Any) -> TokenError:
    started = time.monotonic()
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    assert time.monotonic() - started < 1.0  # a sanity bound, not a benchmark
    return caught.value


def test_round_trip(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.issue("visitor-7", {"firstName": "Ada", "email": "ada@example.com"})
    result = verifier.verify(token)
    assert result.user_id == "visitor-7"
    assert result.visitor_data == {"firstName": "Ada", "email": "ada@example.com"}
    assert result.issuer == ISS
    assert 0 < (result.expires_at.timestamp() - time.time()) <= 60
    assert "visitor-7" not in repr(result)


def test_token_header_is_what_the_platform_expects(issuer: TokenIssuer) -> None:
    header = json.loads(base64.urlsafe_b64decode(issuer.issue("u").split(".")[0] + "=="))
    assert header == OUTER


def test_our_tokens_open_with_joserfc(
    issuer: TokenIssuer, brand_key: Any, platform_key: Any
) -> None:
    token = issuer.issue("visitor-9", {"city": "Nantes"})
    opened = rfc_jwe.decrypt_compact(
        token, rfc_key(platform_key), algorithms=["RSA-OAEP-256", "A256GCM"]
    )
    assert opened.headers() == OUTER
    verified = rfc_jws.deserialize_compact(
        opened.plaintext, rfc_key(brand_key, False), algorithms=["RS256"]
    )
    payload = json.loads(verified.payload)
    assert payload[USER_ID] == "visitor-9"
    assert payload["https://iadvize.com/visitorData"] == {"city": "Nantes"}
    assert payload["iss"] == ISS
    assert payload["exp"] - payload["iat"] == 60


def test_joserfc_tokens_verify_with_ours(
    verifier: TokenVerifier, brand_key: Any, platform_key: Any
) -> None:
    token = mint_with_joserfc(brand_key, platform_key, claims())
    assert verifier.verify(token).user_id == "user-1"


def test_wrong_platform_key_is_decryption_failed(
    verifier: TokenVerifier, brand_key: Any, other_key: Any
) -> None:
    token = TokenIssuer(brand_key, other_key, ISS).issue("u")
    error = refused(verifier, token)
    assert error.reason is FailureReason.DECRYPTION_FAILED
    assert error.check == "decryption"


def test_wrong_brand_key_is_invalid_signature(
    verifier: TokenVerifier, other_key: Any, platform_key: Any
) -> None:
    error = refused(verifier, TokenIssuer(other_key, platform_key, ISS).issue("u"))
    assert error.reason is FailureReason.INVALID_SIGNATURE
    assert error.check == "signature"


def test_expired(verifier: TokenVerifier, brand_key: Any, platform_key: Any) -> None:
    token = TokenIssuer(brand_key, platform_key, ISS, clock=lambda: time.time() - 120).issue("u")
    error = refused(verifier, token)
    assert error.reason is FailureReason.EXPIRED_TOKEN
    assert error.check == "expiry"


def test_leeway_tolerates_small_clock_skew(brand_key: Any, platform_key: Any) -> None:
    token = TokenIssuer(brand_key, platform_key, ISS, clock=lambda: time.time() - 62).issue("u")
    assert TokenVerifier(platform_key, brand_key, leeway=10).verify(token).user_id == "u"


@pytest.mark.parametrize(
    ("make_payload", "reason"),
    [
        (lambda: claims(**{USER_ID: None}), FailureReason.INVALID_CLAIMS),
        (lambda: claims(**{USER_ID: 12345}), FailureReason.INVALID_CLAIMS),
        (lambda: claims(**{USER_ID: ""}), FailureReason.INVALID_CLAIMS),
        (lambda: claims(**{USER_ID: "x" * 256}), FailureReason.INVALID_CLAIMS),
        (lambda: claims(iss="https://someone-else.example"), FailureReason.INVALID_CLAIMS),
        (lambda: claims(exp="tomorrow"), FailureReason.INVALID_CLAIMS),
        (
            lambda: claims(**{"https://iadvize.com/visitorData": ["not", "an", "object"]}),
            FailureReason.INVALID_CLAIMS,
        ),
        (lambda: claims(nbf=int(time.time()) + 3600), FailureReason.INVALID_CLAIMS),
    ],
    ids=[
        "no-user-id",
        "int-user-id",
        "empty-user-id",
        "user-id-256",
        "wrong-issuer",
        "exp-not-number",
        "visitor-data-list",
        "not-yet-valid",
    ],
)
def test_bad_claims(
    verifier: TokenVerifier,
    brand_key: Any,
    platform_key: Any,
    make_payload: Any,
    reason: FailureReason,
) -> None:
    # Built at run time: a payload made at collection could expire before its test runs.
    error = refused(verifier, mint_with_joserfc(brand_key, platform_key, make_payload()))
    assert error.reason is reason


def test_user_id_of_255_is_fine(verifier: TokenVerifier, issuer: TokenIssuer) -> None:
    assert verifier.verify(issuer.issue("x" * 255)).user_id == "x" * 255


def test_alg_none_is_unsigned(verifier: TokenVerifier, platform_key: Any) -> None:
    inner = f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(json.dumps(claims()).encode())}."
    error = refused(verifier, encrypt_raw(platform_key, inner.encode()))
    assert error.reason is FailureReason.INVALID_SIGNATURE


def test_unsigned_claims_inside_the_jwe(verifier: TokenVerifier, platform_key: Any) -> None:
    error = refused(verifier, encrypt_raw(platform_key, json.dumps(claims()).encode()))
    assert error.reason is FailureReason.INVALID_SIGNATURE


def test_hs256_with_the_public_key_as_secret(
    verifier: TokenVerifier, brand_key: Any, platform_key: Any
) -> None:
    """Algorithm confusion: an attacker signs with the (public) verification key as an HMAC secret."""
    secret = brand_key.export_to_pem(private_key=False)
    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256'}).encode())}.{b64(json.dumps(claims()).encode())}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    error = refused(verifier, encrypt_raw(platform_key, f"{signing_input}.{b64(mac)}".encode()))
    assert error.reason is FailureReason.UNSUPPORTED_ALGORITHM


def test_rs512_inside_is_unsupported(
    verifier: TokenVerifier, brand_key: Any, platform_key: Any
) -> None:
    error = refused(verifier, mint_with_joserfc(brand_key, platform_key, claims(), alg="RS512"))
    assert error.reason is FailureReason.UNSUPPORTED_ALGORITHM


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RSA1_5", "enc": "A256GCM"},
        {"alg": "RSA-OAEP-256", "enc": "A128CBC-HS256"},
        {"alg": "RSA-OAEP", "enc": "A256GCM"},
    ],
    ids=["RSA1_5", "A128CBC-HS256", "RSA-OAEP-sha1"],
)
def test_outer_algorithms_other_than_the_platforms_are_refused(
    verifier: TokenVerifier,
    issuer: TokenIssuer,
    platform_key: Any,
    brand_key: Any,
    header: dict[str, str],
) -> None:
    signed = rfc_jws.serialize_compact(
        {"alg": "RS256"}, json.dumps(claims()), rfc_key(brand_key), algorithms=["RS256"]
    )
    error = refused(verifier, encrypt_raw(platform_key, signed.encode(), header))
    assert error.reason is FailureReason.UNSUPPORTED_ALGORITHM
    assert error.check == "algorithms"


def test_compressed_tokens_are_refused_before_decryption(
    verifier: TokenVerifier, issuer: TokenIssuer
) -> None:
    parts = issuer.issue("u").split(".")
    parts[0] = b64(json.dumps({**OUTER, "zip": "DEF"}).encode())
    assert refused(verifier, ".".join(parts)).reason is FailureReason.UNSUPPORTED_ALGORITHM


def test_tampered_ciphertext_is_decryption_failed(
    verifier: TokenVerifier, issuer: TokenIssuer
) -> None:
    parts = issuer.issue("u").split(".")
    ct = bytearray(base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4)))
    ct[0] ^= 1
    parts[3] = b64(bytes(ct))
    assert refused(verifier, ".".join(parts)).reason is FailureReason.DECRYPTION_FAILED


@pytest.mark.parametrize(
    "make",
    [
        lambda t: t.rsplit(".", 1)[0],
        lambda t: t + ".extra",
        lambda t: "!!!" + t[3:],
        lambda t: t.replace(".", "..", 1),
        lambda t: "",
        lambda t: "not a token at all",
        lambda t: "A" * (1024 * 1024),
        lambda t: b"\xff\xfe" + t.encode(),
        lambda t: None,
        lambda t: 42,
        lambda t: "e30." + t.split(".", 1)[1],
    ],
    ids=[
        "truncated",
        "six-segments",
        "bad-base64",
        "empty-segment",
        "empty",
        "garbage",
        "one-mebibyte",
        "non-ascii-bytes",
        "none",
        "int",
        "header-without-alg",
    ],
)
def test_malformed_input(verifier: TokenVerifier, issuer: TokenIssuer, make: Any) -> None:
    error = refused(verifier, make(issuer.issue("u")))
    assert error.reason in {FailureReason.MALFORMED_TOKEN, FailureReason.UNSUPPORTED_ALGORITHM}
    assert error.check in {"format", "algorithms"}  # refused before any cryptography


def test_oversized_is_refused_before_any_cryptography(verifier: TokenVerifier) -> None:
    error = refused(verifier, "a." * (MAX_TOKEN_CHARS // 2 + 10))
    assert error.check == "format"
    assert "limit" in error.detail


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=3000), st.binary(max_size=3000)))
def test_random_input_is_always_a_typed_refusal(verifier: TokenVerifier, data: Any) -> None:
    with pytest.raises(TokenError) as caught:
        verifier.verify(data)
    assert isinstance(caught.value.reason, FailureReason)


@settings(max_examples=150, deadline=None)
@given(position=st.integers(0, 10_000), char=st.sampled_from("AZaz09-_.=+/ "))
def test_any_one_character_change_is_refused_or_harmless(
    verifier: TokenVerifier, issuer: TokenIssuer, position: int, char: str
) -> None:
    token = issuer.issue("u")
    i = position % len(token)
    mutated = token[:i] + char + token[i + 1 :]
    try:
        assert verifier.verify(mutated).user_id == "u"
    except TokenError as error:
        assert isinstance(error.reason, FailureReason)


def test_diagnosis_reports_each_check_in_order(
    verifier: TokenVerifier, issuer: TokenIssuer, other_key: Any, platform_key: Any
) -> None:
    ok = verifier.diagnose(issuer.issue("u"))
    assert ok.valid
    assert [c.name for c in ok.checks] == [
        "format",
        "algorithms",
        "decryption",
        "signature",
        "claims",
        "expiry",
    ]
    assert all(c.passed for c in ok.checks)
    bad = verifier.diagnose(TokenIssuer(other_key, platform_key, ISS).issue("u"))
    assert not bad.valid
    assert bad.reason is FailureReason.INVALID_SIGNATURE
    assert [(c.name, c.passed) for c in bad.checks] == [
        ("format", True),
        ("algorithms", True),
        ("decryption", True),
        ("signature", False),
    ]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("",), "userId must not be empty"),
        (("x" * 256,), "more than 255"),
        ((123,), "must be a string"),
        (("u", ["a"]), "visitorData must be a JSON object"),
        (("u", {"when": object()}), "only JSON values"),
    ],
)
def test_issuer_refuses_bad_claims(issuer: TokenIssuer, args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(TokenError, match=match) as caught:
        issuer.issue(*args)
    assert caught.value.reason is FailureReason.INVALID_CLAIMS


def test_issuer_and_verifier_refuse_bad_keys(
    brand_key: Any, platform_key: Any, tmp_path: Path
) -> None:
    small = jwk.JWK.generate(kty="RSA", size=1024)
    ec = jwk.JWK.generate(kty="EC", crv="P-256")
    public_brand = brand_key.export_to_pem(private_key=False)
    # A real PEM made now, its body replaced: no key material (even fake) lives in the repo.
    pem_lines = brand_key.export_to_pem(private_key=True, password=None).splitlines()
    corrupt_pem = b"\n".join([pem_lines[0], b"Z2FyYmFnZQ==", pem_lines[-1]]) + b"\n"
    cases = [
        (lambda: TokenIssuer(small, platform_key, ISS), "too small"),
        (lambda: TokenIssuer(ec, platform_key, ISS), "needs an RSA key"),
        (lambda: TokenIssuer(public_brand, platform_key, ISS), "needs a private key"),
        (
            lambda: TokenVerifier(platform_key.export_to_pem(private_key=False), brand_key),
            "decryption key .* needs a private key",
        ),
        (lambda: TokenIssuer(tmp_path / "missing.pem", platform_key, ISS), "no key file"),
        (
            lambda: TokenIssuer(corrupt_pem, platform_key, ISS),
            "unreadable PEM",
        ),
        (lambda: TokenIssuer(b"just bytes", platform_key, ISS), "not a PEM key"),
        (
            lambda: TokenIssuer(
                brand_key.export_to_pem(private_key=True, password=b"pw"), platform_key, ISS
            ),
            "encrypted",
        ),
        (lambda: TokenIssuer(3.14, platform_key, ISS), "expected PEM"),
    ]
    for make, match in cases:
        with pytest.raises(KeyLoadError, match=match):
            make()
    with pytest.raises(ValueError, match="lifetime"):
        TokenIssuer(brand_key, platform_key, ISS, lifetime=0)
    with pytest.raises(ValueError, match="issuer"):
        TokenIssuer(brand_key, platform_key, "")


def test_keys_load_from_pem_text_bytes_path_and_jwk(brand_key: Any, tmp_path: Path) -> None:
    pem = brand_key.export_to_pem(private_key=True, password=None)
    path = tmp_path / "brand.pem"
    path.write_bytes(pem)
    thumb = brand_key.thumbprint()
    for source in (pem, pem.decode(), path, str(path), brand_key):
        assert load_key(source, role="k", private=True).thumbprint() == thumb
    public = load_key(brand_key, role="k", private=False)
    assert not public.has_private
    assert public.thumbprint() == thumb
    encrypted = brand_key.export_to_pem(private_key=True, password=b"s3cret")
    assert load_key(encrypted, role="k", private=True, password=b"s3cret").thumbprint() == thumb


def test_write_key_pairs(tmp_path: Path) -> None:
    written = write_key_pairs(tmp_path / "keys")
    names = sorted(p.name for p in written)
    assert names == [
        "brand_private.pem",
        "brand_public.pem",
        "platform_private.pem",
        "platform_public.pem",
    ]
    for p in written:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        if "private" in p.name:
            assert mode == 0o600
    brand = tmp_path / "keys" / "brand_private.pem"
    platform = tmp_path / "keys" / "platform_public.pem"
    token = TokenIssuer(brand, platform, ISS).issue("u")
    verifier = TokenVerifier(
        tmp_path / "keys" / "platform_private.pem", tmp_path / "keys" / "brand_public.pem"
    )
    assert verifier.verify(token).user_id == "u"
    with pytest.raises(KeyLoadError, match="refusing to overwrite"):
        write_key_pairs(tmp_path / "keys")


def test_generated_keys_are_2048_bits() -> None:
    key = generate_rsa()
    assert key.get_op_key("sign").key_size == 2048
    with pytest.raises(KeyLoadError):
        generate_rsa(1024)

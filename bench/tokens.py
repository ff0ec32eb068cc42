"""3. Tokens: TokenIssuer/TokenVerifier against the same RSA-2048 and AES-GCM operations
done directly with ``cryptography`` in the same run (the floor)."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import per_call, us
from statemachine.tokens import TokenIssuer, TokenVerifier, generate_rsa
from statemachine.tokens.claims import USER_ID

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
PKCS1 = padding.PKCS1v15()


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


class Floor:
    """The irreducible work: sign, wrap a key, encrypt; and the reverse. No JOSE library."""

    def __init__(self, brand: Any, platform: Any) -> None:
        self.brand_private = brand.get_op_key("sign")
        self.brand_public = brand.get_op_key("verify")
        self.platform_public = platform.get_op_key("wrapKey")
        self.platform_private = platform.get_op_key("unwrapKey")
        self.jws_header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        self.jwe_header = b64(
            json.dumps({"alg": "RSA-OAEP-256", "enc": "A256GCM", "cty": "JWT"}).encode()
        )

    def issue(self) -> bytes:
        now = int(time.time())
        claims = {USER_ID: "visitor-42", "iss": "brand", "iat": now, "exp": now + 60}
        signing_input = self.jws_header + b"." + b64(json.dumps(claims).encode())
        signature = self.brand_private.sign(signing_input, PKCS1, hashes.SHA256())
        jws = signing_input + b"." + b64(signature)
        cek, iv = os.urandom(32), os.urandom(12)
        wrapped = self.platform_public.encrypt(cek, OAEP)
        sealed = AESGCM(cek).encrypt(iv, jws, self.jwe_header)
        return b".".join(
            [self.jwe_header, b64(wrapped), b64(iv), b64(sealed[:-16]), b64(sealed[-16:])]
        )

    def verify(self, token: bytes) -> dict[str, Any]:
        header, wrapped, iv, ciphertext, tag = token.split(b".")
        cek = self.platform_private.decrypt(unb64(wrapped), OAEP)
        jws = AESGCM(cek).decrypt(unb64(iv), unb64(ciphertext) + unb64(tag), header)
        signing_input, _, signature = jws.rpartition(b".")
        self.brand_public.verify(unb64(signature), signing_input, PKCS1, hashes.SHA256())
        claims: dict[str, Any] = json.loads(unb64(signing_input.split(b".")[1]))
        return claims


def run(quick: bool) -> dict[str, Any]:
    brand, platform = generate_rsa(), generate_rsa()
    issuer = TokenIssuer(brand, platform, "brand")
    verifier = TokenVerifier(platform, brand, issuer="brand")
    floor = Floor(brand, platform)
    token = issuer.issue("visitor-42")
    floor_token = floor.issue()
    assert (
        verifier.verify(floor_token.decode()).user_id == "visitor-42"
    )  # the floor is the real thing
    assert floor.verify(token.encode())[USER_ID] == "visitor-42"
    number, repeats = (20, 3) if quick else (300, 7)
    return {
        "issue": per_call(lambda: issuer.issue("visitor-42"), number, repeats),
        "issue_floor": per_call(floor.issue, number, repeats),
        "verify": per_call(lambda: verifier.verify(token), number, repeats),
        "verify_floor": per_call(lambda: floor.verify(floor_token), number, repeats),
        "garbage": per_call(lambda: _refuse(verifier, "x" * 20_000), number * 10, repeats),
    }


def _refuse(verifier: TokenVerifier, token: str) -> None:
    from statemachine.tokens import TokenError

    try:
        verifier.verify(token)
    except TokenError:
        return
    raise AssertionError("garbage verified")


def report(r: dict[str, Any]) -> list[str]:
    def row(name: str, ours: float, floor: float) -> str:
        ratio = ours / floor
        verdict = "met" if ratio <= 1.3 else "MISSED"
        return f"| {name} | {us(ours)} | {us(floor)} | **{ratio:.2f}x** ({verdict}) |"

    return [
        "## 3. Tokens",
        "",
        "Against the floor: the same RSA-2048 (PKCS#1 v1.5 SHA-256 signature, OAEP-SHA-256 key "
        "wrap) and AES-256-GCM operations done directly with `cryptography`, in the same run. "
        "Target ≤ 1.3x.",
        "",
        "| operation | ours (median) | floor | ratio |",
        "|---|---|---|---|",
        row("`TokenIssuer.issue`", r["issue"], r["issue_floor"]),
        row("`TokenVerifier.verify`", r["verify"], r["verify_floor"]),
        "",
        f"A 20 KB garbage token is refused in {us(r['garbage'])} (before any cryptography).",
        "",
    ]

"""A token is a credential: it never shows up in logs, repr, str or exceptions."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest
import structlog

from statemachine import (
    ActivationError,
    ActivationSession,
    AsyncActivationSession,
    AuthenticationOption,
    FailureReason,
    LocalActivator,
    fingerprint,
)
from statemachine.tokens import TokenError, TokenIssuer, TokenVerifier
from tests.helpers import POLICIES


@pytest.fixture
def json_logs() -> Any:
    """Real rendering (JSON lines into a buffer), not just captured dicts."""
    buffer = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(file=buffer),
    )
    yield buffer
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
    )


def scenarios(issuer: TokenIssuer, forger: TokenIssuer, stale: TokenIssuer) -> dict[str, Any]:
    class Leaky:
        """An activator whose exception quotes the token: the engine must not repeat it."""

        def activate(self, option: AuthenticationOption) -> None:
            raise ValueError(f"bad token {option.token}")

    return {
        "happy": (lambda: issuer.issue("u"), None),
        "wrong-key": (lambda: forger.issue("u"), None),
        "expired": (lambda: stale.issue("u"), None),
        "leaky-activator": (lambda: issuer.issue("u"), Leaky()),
        "raising-callback": (lambda: issuer.issue("u"), None),
    }


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_no_token_in_logs_repr_str_or_output(
    policy_name: str,
    json_logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    brand_key: Any,
    platform_key: Any,
    other_key: Any,
) -> None:
    forger = TokenIssuer(other_key, platform_key, "https://brand.example")
    stale = TokenIssuer(
        brand_key, platform_key, "https://brand.example", clock=lambda: time.time() - 999
    )
    minted: list[str] = []
    texts: list[str] = []

    def callback(result: Any) -> None:
        texts.extend([repr(result), str(result), repr(result.option), str(result.to_safe_dict())])
        raise RuntimeError(f"callback leaks {result.option.token}")

    for name, (make, activator) in scenarios(issuer, forger, stale).items():

        def provider(make: Any = make) -> str:
            minted.append(make())
            return minted[-1]

        for face in ("blocking", "async"):
            act = activator or LocalActivator(verifier)
            policy = POLICIES[policy_name]()
            if face == "blocking":
                session: Any = ActivationSession(provider, act, policy)
                result = session.activate(callback)
            else:
                session = AsyncActivationSession(provider, act, policy)
                result = asyncio.run(session.activate(callback))
            texts += [repr(session), str(session), repr(session.history), repr(result), name]
            texts.append(session.diagram())

    assert minted
    logged = json_logs.getvalue()
    assert logged.count("activation.transition") > 10
    for line in logged.splitlines():
        json.loads(line)
    captured = capsys.readouterr()
    haystack = "\n".join([logged, captured.out, captured.err, *texts])
    for token in minted:
        assert token not in haystack
        for segment in token.split("."):
            if len(segment) > 16:
                assert segment not in haystack


def test_errors_never_carry_the_token(
    issuer: TokenIssuer, verifier: TokenVerifier, other_key: Any, platform_key: Any
) -> None:
    token = TokenIssuer(other_key, platform_key, "x").issue("u")
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    assert token not in str(caught.value)
    assert token not in repr(caught.value)
    with pytest.raises(ActivationError) as activation_error:
        LocalActivator(verifier).activate(AuthenticationOption.secured(token))
    assert activation_error.value.reason is FailureReason.INVALID_SIGNATURE
    assert token not in str(activation_error.value)
    assert activation_error.value.__suppress_context__  # the chain is not printed either


def test_fingerprint_is_short_stable_and_not_the_token(issuer: TokenIssuer) -> None:
    token = issuer.issue("u")
    fp = fingerprint(token)
    assert fp == fingerprint(token)
    assert fp is not None
    assert fp.startswith("sha256:")
    assert len(fp) == 23
    assert token not in fp
    option = AuthenticationOption.secured(token)
    assert fp in repr(option)
    assert token not in repr(option)
    assert token not in str(option)

"""The outcome table of docs/design.md §3, end to end: real keys, real JWEs, LocalActivator,
both policies, both session faces."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from policies import AnonymousFallbackPolicy, RetryPolicy
from statemachine import (
    ActivationError,
    ActivationResult,
    ActivationSession,
    AsyncActivationSession,
    AuthenticationOption,
    FailureReason,
    LocalActivator,
    State,
    TransitionNotAllowed,
)
from statemachine.tokens import TokenIssuer, TokenVerifier
from tests.helpers import FAST_RETRY, POLICIES

SECURED = "SECURED_AUTHENTICATION"
ANONYMOUS = "ANONYMOUS_AUTHENTICATION"


class Flaky:
    """The platform failing ``failures`` times with a server error, then verifying for real."""

    def __init__(
        self, inner: Any, failures: int, reason: FailureReason = FailureReason.SERVER_ERROR
    ):
        self.inner, self.failures, self.reason = inner, failures, reason
        self.calls: list[AuthenticationOption] = []

    def activate(self, option: AuthenticationOption) -> None:
        self.calls.append(option)
        if option.is_secured and self.failures > 0:
            self.failures -= 1
            raise ActivationError(self.reason)
        self.inner.activate(option)


class AnonymousRefused(Flaky):
    def activate(self, option: AuthenticationOption) -> None:
        self.calls.append(option)
        if not option.is_secured:
            raise ActivationError(FailureReason.SERVER_ERROR)
        self.inner.activate(option)


def run(
    face: str, provider: Callable[[], Any], activator: Any, policy: Any, method: str = "activate"
) -> tuple[ActivationResult, Any]:
    if face == "blocking":
        session: Any = ActivationSession(provider, activator, policy)
        return getattr(session, method)(), session

    async def go() -> tuple[ActivationResult, Any]:
        s = AsyncActivationSession(provider, activator, policy)
        return await getattr(s, method)(), s

    return asyncio.run(go())


FACES = ["blocking", "async"]


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(POLICIES))
def policy_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_secured_activation_succeeds(
    face: str, policy_name: str, issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token_holder: list[str] = []

    def provider() -> str:
        token_holder.append(issuer.issue("visitor-42"))
        return token_holder[-1]

    result, session = run(face, provider, LocalActivator(verifier), POLICIES[policy_name]())
    assert result.status == "authentication-success"
    assert result.state is State.AUTHENTICATED is session.state
    assert result.option.type == SECURED
    assert result.reason is None
    assert result.attempts == 1
    assert result.to_dict() == {
        "authentication": {
            "option": {"type": SECURED, "token": token_holder[0]},
            "status": "authentication-success",
        }
    }


@pytest.mark.parametrize(
    "provider",
    [
        lambda: None,
        lambda: 1 / 0,
        lambda: "",
        lambda: {"authenticationOption": {"type": ANONYMOUS}},
        lambda: 42,
    ],
    ids=["none", "raises", "empty", "wrong-type", "not-a-token"],
)
def test_provider_failure_goes_straight_to_the_policy(
    face: str, policy_name: str, provider: Any, verifier: TokenVerifier
) -> None:
    activator = Flaky(LocalActivator(verifier), 0)
    result, session = run(face, provider, activator, POLICIES[policy_name]())
    assert result.status == "authentication-failure"
    assert result.option.type == SECURED
    assert result.attempts == 0
    assert result.reason in {FailureReason.TOKEN_UNAVAILABLE, FailureReason.INVALID_OPTION}
    assert all(not o.is_secured for o in activator.calls)  # never retried, never activated
    if policy_name == "defensive":
        assert result.state is State.BLOCKED
        assert activator.calls == []
    else:
        assert result.state is State.ANONYMOUS
        assert [o.type for o in activator.calls] == [ANONYMOUS]
    assert session.state is result.state


def test_provider_shapes_accepted(face: str, issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    for shape in (
        lambda t: t,
        lambda t: AuthenticationOption.secured(t),
        lambda t: {"authenticationOption": {"type": SECURED, "token": t}},
    ):
        result, _ = run(
            face,
            lambda s=shape: s(issuer.issue("u")),
            LocalActivator(verifier),
            POLICIES["defensive"](),
        )
        assert result.state is State.AUTHENTICATED


def test_wrong_key_is_not_retried(
    face: str, policy_name: str, other_key: Any, platform_key: Any, verifier: TokenVerifier
) -> None:
    forger = TokenIssuer(other_key, platform_key, "https://brand.example")
    activator = Flaky(LocalActivator(verifier), 0)
    result, _ = run(face, lambda: forger.issue("u"), activator, POLICIES[policy_name]())
    assert result.reason is FailureReason.INVALID_SIGNATURE
    assert result.attempts == 1
    assert result.state is (State.BLOCKED if policy_name == "defensive" else State.ANONYMOUS)


def test_expired_tokens_are_retried_with_fresh_tokens(
    face: str, policy_name: str, brand_key: Any, platform_key: Any, verifier: TokenVerifier
) -> None:
    stale = TokenIssuer(
        brand_key, platform_key, "https://brand.example", clock=lambda: time.time() - 3600
    )
    tokens: list[str] = []

    def provider() -> str:
        tokens.append(stale.issue("u"))
        return tokens[-1]

    result, session = run(face, provider, LocalActivator(verifier), POLICIES[policy_name]())
    assert result.reason is FailureReason.EXPIRED_TOKEN
    assert result.attempts == 4 == len(tokens) == len(set(tokens))
    assert [e.dest for e in session.history].count(State.RETRYING) == 3


def test_flaky_platform_twice_then_fine(
    face: str, policy_name: str, issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    activator = Flaky(LocalActivator(verifier), 2)
    result, _ = run(face, lambda: issuer.issue("u"), activator, POLICIES[policy_name]())
    assert result.state is State.AUTHENTICATED
    assert result.attempts == 3
    assert len({o.token for o in activator.calls}) == 3  # a fresh token per attempt


def test_platform_down_for_good(
    face: str, policy_name: str, issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    activator = Flaky(LocalActivator(verifier), 99)
    result, _ = run(face, lambda: issuer.issue("u"), activator, POLICIES[policy_name]())
    assert result.reason is FailureReason.SERVER_ERROR
    assert result.attempts == 4
    assert sum(o.is_secured for o in activator.calls) == 4
    assert result.state is (State.BLOCKED if policy_name == "defensive" else State.ANONYMOUS)


def test_anonymous_policy_can_block_after_activation_failure(
    face: str, issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    policy = AnonymousFallbackPolicy(retry=FAST_RETRY, on_activation_failure="block")
    result, _ = run(face, lambda: issuer.issue("u"), Flaky(LocalActivator(verifier), 99), policy)
    assert result.state is State.BLOCKED
    assert result.reason is FailureReason.SERVER_ERROR
    result, _ = run(face, lambda: None, Flaky(LocalActivator(verifier), 0), policy)
    assert result.state is State.ANONYMOUS
    assert result.reason is FailureReason.TOKEN_UNAVAILABLE


def test_fallback_itself_failing_blocks_with_the_secured_reason(
    face: str, verifier: TokenVerifier
) -> None:
    result, _ = run(
        face, lambda: None, AnonymousRefused(LocalActivator(verifier), 0), POLICIES["anonymous"]()
    )
    assert result.state is State.BLOCKED
    assert result.option.type == SECURED
    assert result.reason is FailureReason.TOKEN_UNAVAILABLE


def test_activate_anonymously(face: str, policy_name: str, verifier: TokenVerifier) -> None:
    result, _ = run(
        face,
        lambda: None,
        LocalActivator(verifier),
        POLICIES[policy_name](),
        "activate_anonymously",
    )
    assert result.status == "authentication-success"
    assert result.state is State.ANONYMOUS
    assert result.to_dict() == {
        "authentication": {"option": {"type": ANONYMOUS}, "status": "authentication-success"}
    }


def test_double_activation_and_logout(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    session = ActivationSession(
        lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]()
    )
    first = session.activate()
    second = session.activate()
    assert first.state is State.AUTHENTICATED
    assert second.reason is FailureReason.ALREADY_ACTIVATED
    assert second.state is State.AUTHENTICATED
    assert (
        second.to_dict()["authentication"]["reason"] == "Can't activate twice, please logout first"
    )
    session.logout()
    assert session.state is State.UNAUTHENTICATED
    assert session.history == ()
    assert session.activate().state is State.AUTHENTICATED


def test_logout_forgets_the_visitor(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    session = ActivationSession(
        lambda: issuer.issue("alice"), LocalActivator(verifier), POLICIES["defensive"]()
    )
    token = session.activate().option.token
    assert token is not None
    session.logout()
    core = session._core
    leftovers = [core.option, core.reason, core.flow, core.history]
    assert leftovers == [None, None, None, ()]
    assert core.attempts == 0
    assert all(token not in repr(getattr(core, slot)) for slot in type(core).__slots__)
    assert token not in repr(session)
    session.logout()  # idempotent when nothing is activated
    assert session.state is State.UNAUTHENTICATED


def test_anonymous_visitor_signs_in(
    face: str, issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    async def go() -> list[ActivationResult]:
        s = AsyncActivationSession(
            lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]()
        )
        return [await s.activate_anonymously(), await s.activate()]

    if face == "async":
        anon, secured = asyncio.run(go())
    else:
        s = ActivationSession(
            lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]()
        )
        anon, secured = s.activate_anonymously(), s.activate()
    assert anon.state is State.ANONYMOUS
    assert secured.state is State.AUTHENTICATED


def test_blocked_visitor_tries_again_on_next_page_load(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    answers = iter([None, "later"])
    session = ActivationSession(
        lambda: issuer.issue("u") if next(answers) else None,
        LocalActivator(verifier),
        POLICIES["defensive"](),
    )
    assert session.activate().state is State.BLOCKED
    assert session.activate().state is State.AUTHENTICATED


def test_reverify(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    session = ActivationSession(
        lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]()
    )
    with pytest.raises(TransitionNotAllowed):
        session.reverify()
    session.activate()
    before = session.snapshot()["token_fingerprint"]
    result = session.reverify()
    assert result.state is State.AUTHENTICATED
    assert result.attempts == 1
    last = session.history[-1]
    assert (last.source, last.trigger.value, last.dest) == (
        State.AUTHENTICATED,
        "token_refreshed",
        State.AUTHENTICATED,
    )
    assert session.snapshot()["token_fingerprint"] != before


def test_callback_called_exactly_once_sync_and_async(
    face: str, issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    seen: list[ActivationResult] = []

    async def async_callback(result: ActivationResult) -> None:
        await asyncio.sleep(0)
        seen.append(result)

    for callback in (seen.append, async_callback):
        seen.clear()
        if face == "blocking":
            s: Any = ActivationSession(
                lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]()
            )
            result = s.activate(callback)
            rejected = s.activate(callback)
        else:

            async def go(cb: Any = callback) -> tuple[ActivationResult, ActivationResult]:
                s = AsyncActivationSession(
                    lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]()
                )
                return await s.activate(cb), await s.activate(cb)

            result, rejected = asyncio.run(go())
        assert seen == [result, rejected]


def test_callback_errors_are_logged_and_change_nothing(
    face: str, issuer: TokenIssuer, verifier: TokenVerifier, logs: list[dict[str, Any]]
) -> None:
    def broken(result: ActivationResult) -> None:
        raise RuntimeError("host bug")

    result, _session = run(
        face, lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]()
    )
    assert result.state is State.AUTHENTICATED
    if face == "blocking":
        s: Any = ActivationSession(
            lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]()
        )
        assert s.activate(broken).state is State.AUTHENTICATED
    else:

        async def go() -> ActivationResult:
            s = AsyncActivationSession(
                lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]()
            )
            return await s.activate(broken)

        assert asyncio.run(go()).state is State.AUTHENTICATED
    errors = [e for e in logs if e["event"] == "activation.callback_error"]
    assert len(errors) == 1
    assert errors[0]["error_type"] == "RuntimeError"


def test_unexpected_activator_exception_is_a_server_error(
    face: str, issuer: TokenIssuer, logs: list[dict[str, Any]]
) -> None:
    class Broken:
        def activate(self, option: AuthenticationOption) -> None:
            raise ConnectionError("platform unreachable")

    result, _ = run(
        face,
        lambda: issuer.issue("u"),
        Broken(),
        POLICIES["defensive"](
            retry=RetryPolicy(max_retries=1, base_delay=0, max_delay=0, jitter=0)
        ),
    )
    assert result.reason is FailureReason.SERVER_ERROR
    assert result.attempts == 2
    assert {e["error_type"] for e in logs if e["event"] == "activation.activator_error"} == {
        "ConnectionError"
    }


def test_bad_constructor_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="token_provider must be a callable"):
        ActivationSession("not callable", object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="activator must have an activate"):
        ActivationSession(lambda: "t", object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy must provide"):
        AsyncActivationSession(lambda: "t", Flaky(None, 0), policy=object())  # type: ignore[arg-type]


def test_a_broken_log_sink_does_not_change_the_outcome(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    import io

    import structlog

    closed = io.StringIO()
    closed.close()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=closed),
    )
    result, _ = run("blocking", lambda: 1 / 0, LocalActivator(verifier), POLICIES["anonymous"]())
    assert result.state is State.ANONYMOUS
    assert result.reason is FailureReason.TOKEN_UNAVAILABLE
    result, _ = run(
        "async", lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]()
    )
    assert result.state is State.AUTHENTICATED


def test_each_structlog_configuration_is_honoured_by_the_next_session(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    """Sessions reuse the resolved logger only while structlog's configuration is unchanged."""
    import io
    import json as jsonlib

    import structlog

    first, second = io.StringIO(), io.StringIO()
    for sink in (first, second):
        structlog.configure(
            processors=[structlog.processors.JSONRenderer()],
            logger_factory=structlog.PrintLoggerFactory(file=sink),
        )
        for _ in range(2):
            run(
                "blocking",
                lambda: issuer.issue("u"),
                LocalActivator(verifier),
                POLICIES["defensive"](),
            )
    for sink in (first, second):
        lines = [jsonlib.loads(line) for line in sink.getvalue().splitlines()]
        assert len({line["session_id"] for line in lines}) == 2  # two sessions, each its own id
        assert [line["event"] for line in lines].count("activation.transition") == 6
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=first),
        wrapper_class=structlog.make_filtering_bound_logger(30),  # WARNING: info is dropped
    )
    before = first.getvalue()
    run("blocking", lambda: issuer.issue("u"), LocalActivator(verifier), POLICIES["defensive"]())
    assert first.getvalue() == before

"""Lifetimes and refresh without silent downgrade.

One test per rule, on real sessions and trackers with real tokens.
"""

from __future__ import annotations

import asyncio
import threading
import time
from functools import partial
from typing import Any

import pytest

from policies import AnonymousFallbackPolicy, DefensivePolicy, PolicyError, load_policy
from statemachine import (
    ActivationError,
    ActivationSession,
    ActivationTracker,
    Answer,
    AsyncActivationSession,
    AuthenticationOption,
    FailureReason,
    LocalActivator,
    State,
    Trigger,
    sessions,
)
from statemachine.protocol.options import SECURED
from statemachine.stores import MemoryStore
from statemachine.tokens import TokenIssuer, TokenVerifier
from tests.helpers import FAST_RETRY
from tests.tracker_harness import Clock, CountingProvider, callback, new_flow

FACES = [ActivationSession, AsyncActivationSession]


def run(session: Any, method: str, *args: Any, **kw: Any) -> Any:
    value = getattr(session, method)(*args, **kw)
    return asyncio.run(value) if asyncio.iscoroutine(value) else value


class Activator:
    """LocalActivator that records the session state it is called in, and can refuse."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.local = LocalActivator(verifier)
        self.states: list[State] = []
        self.session: Any = None
        self.refuse: FailureReason | None = None

    def activate(self, option: AuthenticationOption) -> None:
        if self.session is not None:
            self.states.append(self.session.state)
        if self.refuse is not None:
            raise ActivationError(self.refuse)
        self.local.activate(option)


@pytest.fixture
def provider(issuer: TokenIssuer) -> CountingProvider:
    return CountingProvider(partial(issuer.issue, "visitor-9"))


# -- 1. lifetime ------------------------------------------------------------------
def test_session_lifetime_is_a_validated_policy_setting() -> None:
    assert DefensivePolicy().session_lifetime == 3600.0
    assert AnonymousFallbackPolicy(session_lifetime=420).session_lifetime == 420.0
    assert load_policy({"session_lifetime": 420}).session_lifetime == 420.0
    for bad in (0, -1, float("inf"), "1h", 10**9):
        with pytest.raises(PolicyError) as caught:
            DefensivePolicy(session_lifetime=bad)
        assert caught.value.field == "session_lifetime"


@pytest.mark.parametrize("face", FACES)
def test_result_says_until_when_the_visitor_is_authenticated(
    face: Any, provider: CountingProvider, verifier: TokenVerifier
) -> None:
    session = face(provider, LocalActivator(verifier), DefensivePolicy(session_lifetime=420))
    before = time.time()
    result = run(session, "activate")
    assert result.state is State.AUTHENTICATED
    assert before + 420 <= result.authenticated_until <= time.time() + 420
    assert session.authenticated_until == result.authenticated_until
    run(session, "logout")
    assert session.authenticated_until is None


@pytest.mark.parametrize("face", FACES)
def test_after_the_lifetime_activate_reverifies(
    face: Any, provider: CountingProvider, verifier: TokenVerifier
) -> None:
    session = face(provider, LocalActivator(verifier), DefensivePolicy(session_lifetime=1))
    run(session, "activate")
    assert run(session, "activate").reason is FailureReason.ALREADY_ACTIVATED
    time.sleep(1.05)
    result = run(session, "activate")
    assert result.state is State.AUTHENTICATED
    assert provider.calls == 2
    triggers = [e.trigger for e in session.history]
    assert Trigger.SESSION_EXPIRED in triggers
    expired = session.history[triggers.index(Trigger.SESSION_EXPIRED)]
    assert (expired.source, expired.dest) == (State.AUTHENTICATED, State.FETCHING_TOKEN)


def test_tracker_view_and_expiry(provider: CountingProvider) -> None:
    clock = Clock()
    tracker = ActivationTracker(
        DefensivePolicy(retry=FAST_RETRY, session_lifetime=420), MemoryStore(), clock=clock
    )
    flow = new_flow()
    tracker.token_request("v", flow, provider)
    tracker.report("v", flow, callback(True, SECURED))
    view = tracker.view("v")
    assert view.authenticated_until == pytest.approx(clock.now + 420)
    clock.now += 421
    reply = tracker.token_request("v", new_flow(), provider)
    assert (reply.answer, reply.state) == (Answer.TOKEN, State.ACTIVATING)  # a new flow
    assert Trigger.SESSION_EXPIRED in [e.trigger for e in tracker.view("v").history]
    assert tracker.view("v").authenticated_until is None


# -- 2. refresh without silent downgrade ----------------------------------------------
@pytest.mark.parametrize("face", FACES)
def test_refresh_keeps_the_visitor_authenticated_while_it_runs(
    face: Any, provider: CountingProvider, verifier: TokenVerifier
) -> None:
    activator = Activator(verifier)
    session = face(provider, activator, DefensivePolicy(retry=FAST_RETRY))
    activator.session = session
    run(session, "activate")
    first = session.snapshot()["token_fingerprint"]
    result = run(session, "reverify")
    assert result.state is State.AUTHENTICATED
    assert activator.states == [State.ACTIVATING, State.AUTHENTICATED]  # never left it
    assert session.snapshot()["token_fingerprint"] != first
    assert session.history[-1].trigger is Trigger.TOKEN_REFRESHED


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("policy", ["defensive", "anonymous"])
def test_a_failed_refresh_follows_the_policy_explicitly(
    face: Any, provider: CountingProvider, verifier: TokenVerifier, policy: str
) -> None:
    made = (DefensivePolicy if policy == "defensive" else AnonymousFallbackPolicy)(retry=FAST_RETRY)
    session = face(provider, LocalActivator(verifier), made)
    run(session, "activate")
    provider.fail = True
    result = run(session, "reverify")
    failed = next(e for e in session.history if e.trigger is Trigger.REFRESH_FAILED)
    assert failed.source is State.AUTHENTICATED
    assert failed.reason is FailureReason.TOKEN_UNAVAILABLE
    expected = State.BLOCKED if policy == "defensive" else State.ANONYMOUS
    assert result.state is expected
    assert result.reason is FailureReason.TOKEN_UNAVAILABLE


@pytest.mark.parametrize("face", FACES)
def test_a_refreshed_token_the_platform_refuses_follows_the_policy(
    face: Any, provider: CountingProvider, verifier: TokenVerifier
) -> None:
    activator = Activator(verifier)
    session = face(provider, activator, AnonymousFallbackPolicy(on_activation_failure="block"))
    run(session, "activate")
    activator.refuse = FailureReason.INVALID_SIGNATURE
    result = run(session, "reverify")
    assert (result.state, result.reason) == (State.BLOCKED, FailureReason.INVALID_SIGNATURE)
    assert session.history[-1].trigger is Trigger.REFRESH_REJECTED


def test_logout_during_a_refresh_ends_it_cancelled(
    provider: CountingProvider, verifier: TokenVerifier
) -> None:
    gate, entered = threading.Event(), threading.Event()
    tokens = iter([provider(), None])

    def slow() -> str | None:
        token = next(tokens)
        if token is None:
            entered.set()
            gate.wait(10)
            return provider()
        return token

    session = ActivationSession(slow, LocalActivator(verifier), DefensivePolicy())
    session.activate()
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(session.reverify()))
    worker.start()
    assert entered.wait(10)
    session.logout()
    gate.set()
    worker.join(10)
    assert results[0].reason is FailureReason.CANCELLED
    assert session.state is State.UNAUTHENTICATED


def test_cancel_during_a_refresh_keeps_the_visitor_authenticated(
    provider: CountingProvider, verifier: TokenVerifier
) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        calls = 0

        async def slow() -> str | None:
            nonlocal calls
            calls += 1
            if calls > 1:
                await gate.wait()
            return provider()

        session = AsyncActivationSession(slow, LocalActivator(verifier), DefensivePolicy())
        await session.activate()
        running = asyncio.ensure_future(session.reverify())
        await asyncio.sleep(0.01)
        assert session.cancel()
        result = await running
        assert result.reason is FailureReason.CANCELLED
        assert session.state is State.AUTHENTICATED

    asyncio.run(scenario())


@pytest.mark.parametrize("face", FACES)
def test_refresh_ahead_is_single_flight(
    face: Any, issuer: TokenIssuer, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty callers during one refresh: one provider call, one result for all.

    No timing assumption: the refresh's provider call waits until every other
    caller is waiting for the shared refresh (asyncio: ``gather`` runs each
    caller up to its wait before the provider's answer can be processed;
    threads: each caller's wait is counted), so a caller that a busy machine
    starts late cannot arrive after the refresh ended and start a second one.
    """
    calls = 0
    lock = threading.Lock()
    joined = threading.Condition()
    waiting = 0

    class CountedWait(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            nonlocal waiting
            with joined:
                waiting += 1
                joined.notify_all()
            return super().wait(timeout)

    class CountedRefresh(sessions._SharedRefresh):
        def __init__(self) -> None:
            super().__init__()
            self.done = CountedWait()

    monkeypatch.setattr(sessions, "_SharedRefresh", CountedRefresh)

    def provider() -> str:
        nonlocal calls
        with lock:
            calls += 1
            refresh = calls == 2
        if refresh and face is ActivationSession:
            with joined:
                assert joined.wait_for(lambda: waiting == 19, timeout=30), waiting
        return issuer.issue("visitor-9")

    session = face(
        provider,
        LocalActivator(verifier),
        DefensivePolicy(session_lifetime=60),
        refresh_ahead=120,  # always within the margin: every activate refreshes
    )
    run(session, "activate")
    assert calls == 1
    if face is AsyncActivationSession:

        async def many() -> list[Any]:
            return await asyncio.gather(*(session.activate() for _ in range(20)))

        results = asyncio.run(many())
    else:
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(session.activate())) for _ in range(20)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert calls == 2  # one refresh for twenty callers
    assert len(results) == 20
    assert {r.state for r in results} == {State.AUTHENTICATED}
    assert len({r.option.fingerprint for r in results}) == 1  # all got the same result
    assert [e.trigger for e in session.history].count(Trigger.TOKEN_REFRESHED) == 1


def test_refresh_ahead_is_opt_in(provider: CountingProvider, verifier: TokenVerifier) -> None:
    session = ActivationSession(provider, LocalActivator(verifier), DefensivePolicy())
    session.activate()
    assert session.activate().reason is FailureReason.ALREADY_ACTIVATED
    with pytest.raises(ValueError, match="refresh_ahead"):
        ActivationSession(provider, LocalActivator(verifier), refresh_ahead=-1)

"""Every tracker rule, one test each, for both policies, both faces and both stores.

Tokens are real JWEs from a key pair made for this test session; Redis is a
real redis-server on a free loopback port, and a real 6-node Redis Cluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from statemachine import Answer, FailureReason, State, TrackerInputError, Trigger
from statemachine.protocol.options import ANONYMOUS, SECURED
from statemachine.stores import MemoryStore, RedisStore
from statemachine.tokens import TokenIssuer, TokenVerifier
from statemachine.tracking._rules import claim_seconds, lease_seconds
from tests.helpers import anonymous, defensive
from tests.tracker_harness import Clock, CountingProvider, Face, callback, new_flow

POLICIES = {"defensive": defensive, "anonymous": anonymous}


@pytest.fixture(params=["memory", "redis", "cluster"])
def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryStore()
    server = request.getfixturevalue(
        "redis_cluster" if request.param == "cluster" else "redis_server"
    )
    return RedisStore.from_url(server.url, prefix=f"test:{os.urandom(6).hex()}:")


@pytest.fixture(params=["async", "blocking"])
def face_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["defensive", "anonymous"])
def policy_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def face(face_kind: str, policy_name: str, store: Any, clock: Clock) -> Iterator[Face]:
    face = Face(face_kind, POLICIES[policy_name](), store, clock)
    yield face
    face.close()


@pytest.fixture
def provider(issuer: TokenIssuer) -> CountingProvider:
    return CountingProvider(partial(issuer.issue, "visitor-42"))


def start(face: Face, provider: CountingProvider, visitor: str = "v1") -> tuple[str, Any]:
    flow = new_flow()
    reply = face.token(visitor, flow, provider)
    assert reply.answer is Answer.TOKEN, reply
    return flow, reply


# -- starting a flow -----------------------------------------------------------
def test_first_request_starts_a_flow_and_hands_out_a_real_token(
    face: Face, provider: CountingProvider, verifier: TokenVerifier
) -> None:
    flow, reply = start(face, provider)
    assert reply.state is State.ACTIVATING
    assert reply.attempt == 1
    assert verifier.verify(reply.to_dict()["authenticationOption"]["token"]).user_id == "visitor-42"
    assert reply.status_code == 200
    view = face.view("v1")
    assert view is not None
    assert (view.state, view.attempts, view.flow_id) == (State.ACTIVATING, 1, flow)
    assert view.token_fingerprint == reply.option.fingerprint
    assert [e.trigger for e in view.history] == [Trigger.ACTIVATE, Trigger.TOKEN_RECEIVED]
    assert provider.calls == 1


def test_success_report_authenticates(face: Face, provider: CountingProvider) -> None:
    flow, _ = start(face, provider)
    reply = face.report("v1", flow, callback(True, SECURED))
    assert reply.accepted
    assert reply.state is State.AUTHENTICATED
    assert reply.to_dict() == {"state": "authenticated", "next": None, "accepted": True}
    view = face.view("v1")
    assert view is not None
    assert view.state is State.AUTHENTICATED
    assert view.lease_until is None


# -- the tag's retries -----------------------------------------------------------
def test_same_flow_asking_again_is_the_tags_retry_with_a_fresh_token(
    face: Face, provider: CountingProvider, policy_name: str
) -> None:
    flow, first = start(face, provider)
    fingerprints = {first.option.fingerprint}
    budget = face.tracker.policy.retry.max_retries
    for attempt in range(2, budget + 2):
        reply = face.token("v1", flow, provider)
        assert reply.answer is Answer.TOKEN
        assert reply.attempt == attempt
        fingerprints.add(reply.option.fingerprint)
    assert len(fingerprints) == budget + 1  # a fresh token each time
    history = face.view("v1").history
    assert sum(e.trigger is Trigger.ACTIVATION_FAILED for e in history) == budget
    assert all(e.reason is FailureReason.UNKNOWN for e in history if e.dest is State.RETRYING)

    # Past the budget: the policy decides, and no token is minted.
    calls = provider.calls
    reply = face.token("v1", flow, provider)
    assert provider.calls == calls
    if policy_name == "defensive":
        assert reply.answer is Answer.DO_NOT_ACTIVATE
        assert reply.state is State.BLOCKED
        assert reply.to_dict() == {
            "activate": False,
            "reason": FailureReason.UNKNOWN.message,  # the tag never said why it failed
        }
    else:
        assert reply.answer is Answer.ANONYMOUS
        assert reply.state is State.ACTIVATING_ANONYMOUS
        assert reply.to_dict() == {"authenticationOption": {"type": ANONYMOUS}}
    assert provider.calls == budget + 1


def test_another_flow_in_flight_is_refused_and_mints_nothing(
    face: Face, provider: CountingProvider
) -> None:
    flow, _ = start(face, provider)
    before = face.view("v1")
    reply = face.token("v1", new_flow(), provider)
    assert reply.answer is Answer.REFUSED
    assert reply.status_code == 409
    assert reply.to_dict() == {"reason": "A login is already ongoing"}
    assert provider.calls == 1
    assert face.view("v1") == before
    assert face.report("v1", flow, callback(True, SECURED)).state is State.AUTHENTICATED


# -- reports -------------------------------------------------------------------
def test_failure_report_is_final_and_the_policy_decides(
    face: Face, provider: CountingProvider, policy_name: str
) -> None:
    flow, _ = start(face, provider)
    reply = face.report("v1", flow, callback(False, SECURED, "The token has expired"))
    assert reply.accepted
    history = face.view("v1").history
    assert history[-1].trigger is Trigger.ACTIVATION_FAILED_FINAL
    assert history[-1].reason is FailureReason.EXPIRED_TOKEN  # retryable, yet not retried
    if policy_name == "defensive":
        assert (reply.state, reply.next) == (State.BLOCKED, None)
        return
    assert reply.state is State.ACTIVATING_ANONYMOUS
    assert reply.to_dict()["next"] == {"type": ANONYMOUS}
    done = face.report("v1", flow, callback(True, ANONYMOUS))
    assert done.state is State.ANONYMOUS
    assert face.view("v1").reason is FailureReason.EXPIRED_TOKEN


def test_anonymous_fallback_that_fails_ends_blocked(
    face: Face, provider: CountingProvider, policy_name: str
) -> None:
    if policy_name == "defensive":
        pytest.skip("the defensive policy never falls back")
    flow, _ = start(face, provider)
    face.report("v1", flow, callback(False, SECURED, "Failed to fetch authentication"))
    reply = face.report("v1", flow, callback(False, ANONYMOUS, "boom"))
    assert reply.state is State.BLOCKED
    assert face.view("v1").history[-1].trigger is Trigger.ANONYMOUS_FAILED


def test_report_for_another_flow_changes_nothing(face: Face, provider: CountingProvider) -> None:
    start(face, provider)
    before = face.view("v1")
    reply = face.report("v1", new_flow(), callback(True, SECURED))
    assert not reply.accepted
    assert reply.reason is FailureReason.LOGIN_ONGOING
    assert face.view("v1") == before


def test_report_of_the_wrong_kind_is_refused(face: Face, provider: CountingProvider) -> None:
    flow, _ = start(face, provider)
    before = face.view("v1")
    with pytest.raises(TrackerInputError, match="awaits SECURED_AUTHENTICATION"):
        face.report("v1", flow, callback(True, ANONYMOUS))
    assert face.view("v1") == before


@pytest.mark.parametrize(
    "activation",
    [
        None,
        "authentication-success",
        {},
        {"authentication": []},
        {"authentication": {"status": "ok", "option": {"type": SECURED}}},
        {"authentication": {"status": "authentication-success", "option": {"type": "X"}}},
        {
            "authentication": {
                "status": "authentication-failure",
                "option": {"type": SECURED},
                "reason": "x" * 501,
            }
        },
        {
            "authentication": {
                "status": "authentication-failure",
                "option": {"type": SECURED},
                "reason": 12,
            }
        },
    ],
)
def test_malformed_report_is_refused_before_anything(
    face: Face, provider: CountingProvider, activation: Any
) -> None:
    flow, _ = start(face, provider)
    before = face.view("v1")
    with pytest.raises(TrackerInputError) as caught:
        face.report("v1", flow, activation)
    assert "\n" not in str(caught.value)
    assert face.view("v1") == before


# -- provider failures -------------------------------------------------------------
def test_provider_failure_goes_straight_to_the_policy(
    face: Face, provider: CountingProvider, policy_name: str
) -> None:
    provider.fail = True
    reply = face.token("v1", new_flow(), provider)
    assert provider.calls == 1
    view = face.view("v1")
    assert view.history[-1].trigger is Trigger.TOKEN_FAILED
    assert view.reason is FailureReason.TOKEN_UNAVAILABLE
    if policy_name == "defensive":
        assert (reply.answer, reply.state) == (Answer.DO_NOT_ACTIVATE, State.BLOCKED)
        assert reply.to_dict()["reason"] == "The token provider could not produce a token"
    else:
        assert (reply.answer, reply.state) == (Answer.ANONYMOUS, State.ACTIVATING_ANONYMOUS)


def test_provider_that_raises_or_returns_garbage_is_a_provider_failure(
    face: Face, policy_name: str
) -> None:
    def raising() -> str:
        raise RuntimeError("backend down: token=secret")

    for visitor, bad in (("a", raising), ("b", lambda: 42), ("c", lambda: {"x": 1})):
        reply = face.token(visitor, new_flow(), bad)
        assert reply.answer in (Answer.DO_NOT_ACTIVATE, Answer.ANONYMOUS)
        assert face.view(visitor).history[-1].trigger is Trigger.TOKEN_FAILED


def test_an_ended_flow_repeats_its_answer_and_mints_nothing(
    face: Face, provider: CountingProvider
) -> None:
    provider.fail = True
    flow = new_flow()
    first = face.token("v1", flow, provider)
    provider.fail = False
    again = face.token("v1", flow, provider)
    assert provider.calls == 1
    assert (again.answer, again.state) == (first.answer, first.state)
    if first.state is State.ACTIVATING_ANONYMOUS:  # the fallback is in flight until reported
        assert face.token("v1", new_flow(), provider).answer is Answer.REFUSED
        assert face.report("v1", flow, callback(True, ANONYMOUS)).state is State.ANONYMOUS
        assert face.token("v1", flow, provider).answer is Answer.ANONYMOUS
        assert provider.calls == 1
    # A new page load (a new flow) starts over.
    assert face.token("v1", new_flow(), provider).answer is Answer.TOKEN


# -- leases ----------------------------------------------------------------------
def test_a_silent_flow_holds_the_visitor_only_for_its_lease(
    face: Face, provider: CountingProvider, clock: Clock
) -> None:
    start(face, provider)
    lease = lease_seconds(face.tracker.policy)
    clock.now += lease - 1
    assert face.token("v1", new_flow(), provider).answer is Answer.REFUSED
    clock.now += 2
    flow2 = new_flow()
    reply = face.token("v1", flow2, provider)
    assert reply.answer is Answer.TOKEN
    history = face.view("v1").history
    expired = [e for e in history if e.trigger is Trigger.LEASE_EXPIRED]
    assert len(expired) == 1
    assert (expired[0].source, expired[0].dest) == (State.ACTIVATING, State.UNAUTHENTICATED)
    assert face.report("v1", flow2, callback(True, SECURED)).state is State.AUTHENTICATED


def test_a_claim_whose_provider_never_answered_lets_go_after_the_token_timeout(
    face: Face, provider: CountingProvider, clock: Clock, store: Any
) -> None:
    """A worker that died while minting leaves a claim; it holds only for the provider's time."""
    flow = new_flow()
    face.token("v1", flow, provider)
    face.logout("v1")
    record = face.tracker._record(None)
    from statemachine.tracking._rules import plan_token

    step = plan_token(record, new_flow(), clock.now)  # what a dying worker wrote, then vanished
    assert step.fetch is not None
    data = face.tracker._dump(record)
    current = store.load("v1")
    assert store.compare_and_set("v1", current.version, data, 60)[0]
    assert face.token("v1", new_flow(), provider).answer is Answer.REFUSED
    clock.now += claim_seconds(face.tracker.policy) + 0.1
    assert face.token("v1", new_flow(), provider).answer is Answer.TOKEN
    assert any(
        e.trigger is Trigger.LEASE_EXPIRED and e.source is State.FETCHING_TOKEN
        for e in face.view("v1").history
    )


def test_each_step_of_the_flow_renews_the_lease(
    face: Face, provider: CountingProvider, clock: Clock
) -> None:
    flow, _ = start(face, provider)
    lease = lease_seconds(face.tracker.policy)
    clock.now += lease - 1
    assert face.token("v1", flow, provider).answer is Answer.TOKEN  # the tag's retry renews it
    clock.now += lease - 1
    assert face.token("v1", new_flow(), provider).answer is Answer.REFUSED


# -- refresh and logout ------------------------------------------------------------
def test_token_request_while_authenticated_refreshes_without_leaving_authenticated(
    face: Face, provider: CountingProvider
) -> None:
    flow, first = start(face, provider)
    face.report("v1", flow, callback(True, SECURED))
    reply = face.token("v1", new_flow(), provider)
    assert (reply.answer, reply.state) == (Answer.TOKEN, State.AUTHENTICATED)
    assert reply.option.fingerprint != first.option.fingerprint
    view = face.view("v1")
    assert view.state is State.AUTHENTICATED
    assert view.token_fingerprint == reply.option.fingerprint
    last = view.history[-1]
    assert (last.source, last.trigger, last.dest) == (
        State.AUTHENTICATED,
        Trigger.TOKEN_REFRESHED,
        State.AUTHENTICATED,
    )


def test_failed_refresh_follows_the_policy_explicitly(
    face: Face, provider: CountingProvider, policy_name: str
) -> None:
    flow, _ = start(face, provider)
    face.report("v1", flow, callback(True, SECURED))
    provider.fail = True
    reply = face.token("v1", flow, provider)
    last = face.view("v1").history[-1]
    assert last.trigger is Trigger.REFRESH_FAILED
    assert last.reason is FailureReason.TOKEN_UNAVAILABLE
    if policy_name == "defensive":
        assert (reply.answer, reply.state) == (Answer.DO_NOT_ACTIVATE, State.BLOCKED)
    else:
        assert (reply.answer, reply.state) == (Answer.ANONYMOUS, State.ACTIVATING_ANONYMOUS)


def test_logout_forgets_the_visitor_but_keeps_its_trail(
    face: Face, provider: CountingProvider
) -> None:
    flow, _ = start(face, provider)
    face.report("v1", flow, callback(True, SECURED))
    view = face.logout("v1")
    assert view is not None
    assert view.state is State.UNAUTHENTICATED
    assert (view.attempts, view.reason, view.token_fingerprint) == (0, None, None)
    # The ended flow stays visible (for a support team), followed by the logout.
    assert [e.trigger for e in view.history] == [
        Trigger.ACTIVATE,
        Trigger.TOKEN_RECEIVED,
        Trigger.ACTIVATION_SUCCEEDED,
        Trigger.LOGOUT,
    ]
    assert face.token("v1", new_flow(), provider).answer is Answer.TOKEN


def test_a_logout_during_a_flow_forgets_the_visitor_and_keeps_its_trail_once(
    face: Face, provider: CountingProvider
) -> None:
    """A logout while the tag is still activating (a second tab signing out, say): the
    flow is cancelled and the visitor forgotten like any logout. The trail held the flow
    twice (the entries before the cancel, then the core's own history that still had
    them), so the inspector counted two flows; and the view kept the attempts, the
    reason and the token's fingerprint of the session the logout ended."""
    start(face, provider)
    view = face.logout("v1")
    assert view is not None
    assert view.state is State.UNAUTHENTICATED
    assert (view.attempts, view.reason, view.token_fingerprint) == (0, None, None)
    assert [e.trigger for e in view.history] == [
        Trigger.ACTIVATE,
        Trigger.TOKEN_RECEIVED,
        Trigger.CANCEL,
    ]
    assert face.view("v1") == view
    assert face.token("v1", new_flow(), provider).answer is Answer.TOKEN


def test_a_trail_is_kept_for_one_session_lifetime_only(issuer: Any) -> None:
    from functools import partial

    from policies import DefensivePolicy
    from statemachine import ActivationTracker
    from statemachine.stores import MemoryStore
    from statemachine.tracking._rules import trail_retention

    now = [1_800_000_000.0]
    policy = DefensivePolicy()
    tracker = ActivationTracker(policy, MemoryStore(), clock=lambda: now[0])
    mint = partial(issuer.issue, "user-1")
    one_flow = [Trigger.ACTIVATE, Trigger.TOKEN_RECEIVED, Trigger.ACTIVATION_SUCCEEDED]
    one_flow.append(Trigger.LOGOUT)

    def sign_in_and_out(flow: str) -> list[Trigger]:
        tracker.token_request("v9", flow, mint)
        tracker.report("v9", flow, callback(True, SECURED))
        tracker.logout("v9")
        view = tracker.view("v9")
        assert view is not None
        return [e.trigger for e in view.history]

    assert sign_in_and_out("flow-1") == one_flow
    now[0] += trail_retention(policy) / 2
    assert sign_in_and_out("flow-2") == one_flow * 2  # within one session lifetime: both
    now[0] += trail_retention(policy) + 1
    assert sign_in_and_out("flow-3") == one_flow  # the older flows have aged out


def test_logout_during_a_flow_cancels_it(face: Face, provider: CountingProvider) -> None:
    flow, _ = start(face, provider)
    assert face.logout("v1").state is State.UNAUTHENTICATED
    assert not face.report("v1", flow, callback(True, SECURED)).accepted
    assert face.view("v1").state is State.UNAUTHENTICATED
    # A tab still retrying the cancelled flow is told not to activate; it mints nothing.
    reply = face.token("v1", flow, provider)
    assert (reply.answer, reply.reason) == (Answer.DO_NOT_ACTIVATE, FailureReason.CANCELLED)
    assert provider.calls == 1


def test_unknown_visitor(face: Face) -> None:
    assert face.view("nobody") is None
    assert face.logout("nobody") is None


@pytest.mark.parametrize("visitor", ["", "x" * 257, "a\nb", 12, None])
def test_bad_visitor_id_is_refused(face: Face, provider: CountingProvider, visitor: Any) -> None:
    with pytest.raises(TrackerInputError, match="visitor id"):
        face.token(visitor, new_flow(), provider)
    assert provider.calls == 0


@pytest.mark.parametrize("flow", ["", "x" * 129, "a b", "é", 7, None])
def test_bad_flow_id_is_refused(face: Face, provider: CountingProvider, flow: Any) -> None:
    with pytest.raises(TrackerInputError, match="flow id"):
        face.token("v1", flow, provider)
    assert provider.calls == 0
    assert face.view("v1") is None


# -- what is stored -----------------------------------------------------------------
def test_the_store_never_holds_a_raw_token(
    face: Face, provider: CountingProvider, store: Any
) -> None:
    tokens = []
    for visitor in ("a", "b", "c"):
        flow, reply = start(face, provider, visitor)
        tokens.append(reply.option.token)
        tokens.append(face.token(visitor, flow, provider).option.token)
    flow, reply = start(face, provider, "d")
    face.report("d", flow, callback(True, SECURED))
    tokens.append(face.token("d", flow, provider).option.token)
    raw = [store.load(v).data for v in ("a", "b", "c", "d")]
    for text in raw:
        json.loads(text)
        for token in tokens:
            assert token not in text
            assert token.split(".")[0] not in text
    assert "sha256:" in raw[0]


def test_a_visitor_dropped_and_made_again_is_never_written_on_another_trackers_old_version(
    issuer: TokenIssuer,
) -> None:
    """Two trackers on one MemoryStore (one process): the first remembers the version it
    wrote; the visitor expires (or is dropped for room) and the second makes it again,
    through the same versions. The first's next request must not take the new visitor's
    version for its own write: the visitor is in flight under another flow (409)."""
    store_time = Clock(0.0)
    store = MemoryStore(clock=store_time)
    clock = Clock()
    first = Face("blocking", defensive(), store, clock)
    second = Face("async", defensive(), store, clock)
    provider = CountingProvider(partial(issuer.issue, "u"))
    try:
        provider.fail = True
        assert first.token("v", new_flow(), provider).state is State.BLOCKED
        provider.fail = False
        store_time.now += 4_000  # past the session lifetime: the key expires
        clock.now += 4_000
        flow = new_flow()
        assert second.token("v", flow, provider).answer is Answer.TOKEN  # in flight
        calls = provider.calls
        other = first.token("v", new_flow(), provider)
        assert other.answer is Answer.REFUSED
        assert provider.calls == calls  # the losing tab minted nothing
        assert second.report("v", flow, callback(True, SECURED)).state is State.AUTHENTICATED
    finally:
        second.close()
        first.close()

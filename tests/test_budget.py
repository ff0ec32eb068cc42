"""The minting budget, the visitor nobody signed in, single-flight refreshes and a full memory
store: the tracker's side of hostile visitors, on both faces and both stores.

Tokens are real JWEs; Redis is a real redis-server on a free loopback port.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from policies import MintBudget, PolicyError, load_policy
from statemachine import ActivationTracker, Answer, FailureReason, State
from statemachine.protocol.options import SECURED
from statemachine.signals.metrics import ActivationMetrics
from statemachine.stores import MemoryStore, RedisStore, StoreError
from statemachine.tokens import TokenIssuer, TokenVerifier
from tests.helpers import anonymous, defensive
from tests.redis_server import commands_sent
from tests.tracker_harness import Clock, CountingProvider, Face, callback, new_flow


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryStore()
    server = request.getfixturevalue("redis_server")
    return RedisStore.from_url(server.url, prefix=f"test:{os.urandom(6).hex()}:")


@pytest.fixture(params=["async", "blocking"])
def face_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_face(kind: str, store: Any, clock: Clock, **policy: Any) -> Face:
    return Face(kind, defensive(**policy), store, clock)


@pytest.fixture
def face(face_kind: str, store: Any, clock: Clock) -> Iterator[Face]:
    face = make_face(face_kind, store, clock, mint_budget=MintBudget(tokens=3, seconds=60))
    yield face
    face.close()


@pytest.fixture
def provider(issuer: TokenIssuer) -> CountingProvider:
    return CountingProvider(partial(issuer.issue, "visitor-42"))


def authenticate(face: Face, provider: Any, visitor: str = "v1") -> None:
    flow = new_flow()
    assert face.token(visitor, flow, provider).answer is Answer.TOKEN
    assert face.report(visitor, flow, callback(True, SECURED)).state is State.AUTHENTICATED


# -- the policy setting ----------------------------------------------------------
def test_the_default_budget_is_12_per_60_seconds() -> None:
    assert defensive().mint_budget == MintBudget(12, 60.0)
    assert anonymous().mint_budget == MintBudget(12, 60.0)
    assert load_policy({}).mint_budget == MintBudget(12, 60.0)


def test_the_budget_reads_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('fallback = "anonymous"\n[mint_budget]\ntokens = 4\nseconds = 30\n')
    assert load_policy(path).mint_budget == MintBudget(4, 30.0)
    path.write_text("mint_budget = false\n")
    assert load_policy(path).mint_budget is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"mint_budget": {"tokens": 0}}, "mint_budget.tokens"),
        ({"mint_budget": {"tokens": 1001}}, "mint_budget.tokens"),
        ({"mint_budget": {"tokens": True}}, "mint_budget.tokens"),
        ({"mint_budget": {"tokens": 2.5}}, "mint_budget.tokens"),
        ({"mint_budget": {"seconds": 0}}, "mint_budget.seconds"),
        ({"mint_budget": {"seconds": "60"}}, "mint_budget.seconds"),
        ({"mint_budget": {"seconds": float("inf")}}, "mint_budget.seconds"),
        ({"mint_budget": {"per": 60}}, "mint_budget.per"),
        ({"mint_budget": 12}, "mint_budget"),
        ({"mint_budget": True}, "mint_budget"),
    ],
)
def test_a_bad_budget_names_its_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(data)
    assert caught.value.field == field


def test_a_bad_budget_in_python_names_its_field() -> None:
    with pytest.raises(PolicyError) as caught:
        defensive(mint_budget=12)
    assert caught.value.field == "mint_budget"
    with pytest.raises(PolicyError) as caught:
        MintBudget(tokens=-1)
    assert caught.value.field == "mint_budget.tokens"


def test_any_policy_object_gets_the_default_budget_or_a_checked_one(clock: Clock) -> None:
    """A host's own policy object: without ``mint_budget``, 12 per 60 s; a bad one is refused."""
    from dataclasses import dataclass, replace
    from types import SimpleNamespace

    from statemachine.protocol.policy import mint_budget

    @dataclass(frozen=True)
    class HostPolicy:  # the protocol and nothing else
        name: str = "host"
        retry: Any = defensive().retry
        token_timeout: float | None = 5.0
        activation_timeout: float | None = 10.0
        on_token_failure: str = "block"
        on_activation_failure: str = "block"

    assert mint_budget(HostPolicy()) == (12, 60.0)
    ActivationTracker(HostPolicy(), MemoryStore(), clock=clock)

    @dataclass(frozen=True)
    class WithBudget(HostPolicy):
        mint_budget: Any = None

    assert mint_budget(WithBudget()) is None
    for bad, name in (
        (SimpleNamespace(tokens=0, seconds=60), "policy.mint_budget.tokens"),
        (SimpleNamespace(tokens=3, seconds=float("nan")), "policy.mint_budget.seconds"),
        (SimpleNamespace(tokens=3, seconds=-1), "policy.mint_budget.seconds"),
    ):
        with pytest.raises(ValueError, match=name):
            ActivationTracker(replace(WithBudget(), mint_budget=bad), MemoryStore())


# -- nobody signed in --------------------------------------------------------------
def test_nobody_signed_in_costs_no_store_access_under_the_defensive_policy(
    face_kind: str, store: Any, clock: Clock
) -> None:
    face = make_face(face_kind, store, clock)
    try:
        if isinstance(store, RedisStore):  # counted by Redis itself, for either face
            with commands_sent(store) as sent:
                replies = [face.token(f"forged-{i}", new_flow(), None) for i in range(200)]
            assert sent == []
        else:
            replies = [face.token(f"forged-{i}", new_flow(), None) for i in range(200)]
        for reply in replies:
            assert reply.answer is Answer.DO_NOT_ACTIVATE
            assert reply.reason is FailureReason.TOKEN_UNAVAILABLE
            assert reply.status_code == 200
            assert reply.to_dict() == {
                "activate": False,
                "reason": FailureReason.TOKEN_UNAVAILABLE.message,
            }
        assert all(face.view(f"forged-{i}") is None for i in range(0, 200, 17))
        if isinstance(store, MemoryStore):
            assert len(store) == 0
    finally:
        face.close()


def test_nobody_signed_in_under_the_fallback_policy_activates_anonymously(
    face_kind: str, clock: Clock
) -> None:
    face = Face(face_kind, anonymous(mint_budget=MintBudget(2, 60)), MemoryStore(), clock)
    try:
        for _ in range(5):  # page loads past the budget: nothing is minted, nothing is spent
            started = new_flow()
            reply = face.token("v1", started, None)
            assert reply.answer is Answer.ANONYMOUS
            assert reply.reason is FailureReason.TOKEN_UNAVAILABLE
            face.report("v1", started, callback(True, "ANONYMOUS_AUTHENTICATION"))
            clock.now += 1
        view = face.view("v1")
        assert view is not None
        assert (view.state, view.mint_budget_left) == (State.ANONYMOUS, 2)
    finally:
        face.close()


# -- the budget ------------------------------------------------------------------------
def test_tokens_stop_at_the_budget_with_429_and_retry_after(
    face: Face, provider: CountingProvider, clock: Clock, verifier: TokenVerifier
) -> None:
    authenticate(face, provider)  # token 1: the first attempt
    clock.now += 1
    assert face.token("v1", new_flow(), provider).answer is Answer.TOKEN  # 2: a refresh
    clock.now += 1
    reply = face.token("v1", new_flow(), provider)  # 3: another refresh
    assert verifier.verify(reply.to_dict()["authenticationOption"]["token"])
    assert provider.calls == 3
    clock.now += 1
    refused = face.token("v1", new_flow(), provider)
    assert refused.answer is Answer.OVER_BUDGET
    assert refused.status_code == 429
    assert refused.reason is FailureReason.MINT_BUDGET_SPENT
    assert refused.option is None
    assert refused.retry_after == pytest.approx(57.0)  # the first token leaves the window at 60 s
    assert refused.headers == {"Retry-After": "57"}
    assert refused.to_dict() == {
        "activate": False,
        "reason": FailureReason.MINT_BUDGET_SPENT.message,
        "retry_after": 57,
    }
    assert provider.calls == 3  # nothing minted
    view = face.view("v1")
    assert view is not None
    assert (view.state, view.mint_budget_left) == (State.AUTHENTICATED, 0)
    assert face.tracker.budget_refusals == 1
    clock.now += 57.0
    assert face.token("v1", new_flow(), provider).answer is Answer.TOKEN  # one slot came back
    assert provider.calls == 4


def test_the_tags_retries_count_against_the_budget(
    face: Face, provider: CountingProvider, clock: Clock
) -> None:
    flow = new_flow()
    for _ in range(3):  # the first attempt and two retries of the same flow
        assert face.token("v1", flow, provider).answer is Answer.TOKEN
        clock.now += 0.5
    reply = face.token("v1", flow, provider)
    assert reply.answer is Answer.OVER_BUDGET
    assert provider.calls == 3


def test_no_window_boundary_doubles_the_budget(
    face_kind: str, provider: CountingProvider, clock: Clock
) -> None:
    """Requests every 0.5 s for 5 minutes: no 60-second span holds more than 3 tokens."""
    face = make_face(face_kind, MemoryStore(), clock, mint_budget=MintBudget(3, 60))
    try:
        authenticate(face, provider)
        handed = [clock.now]
        for _ in range(600):
            clock.now += 0.5
            if face.token("v1", new_flow(), provider).answer is Answer.TOKEN:
                handed.append(clock.now)
        assert len(handed) == provider.calls
        for index, start in enumerate(handed):
            assert sum(1 for at in handed[index:] if at < start + 60) <= 3
        assert len(handed) >= 3 * 5  # and the budget is given back as the window slides
    finally:
        face.close()


def test_a_policy_without_budget_mints_without_limit(
    face_kind: str, provider: CountingProvider, clock: Clock
) -> None:
    face = make_face(face_kind, MemoryStore(), clock, mint_budget=None)
    try:
        authenticate(face, provider)
        for _ in range(30):
            assert face.token("v1", new_flow(), provider).answer is Answer.TOKEN
        view = face.view("v1")
        assert view is not None
        assert view.mint_budget_left is None
    finally:
        face.close()


def test_the_budget_holds_across_trackers_sharing_a_store(
    store: Any, provider: CountingProvider, clock: Clock
) -> None:
    """Two workers (trackers) on one store: the budget is the visitor's, not each worker's."""
    policy = defensive(mint_budget=MintBudget(4, 60))
    first = Face("blocking", policy, store, clock)
    second = Face("async", policy, store, clock)
    try:
        authenticate(first, provider)
        answers = []
        for index in range(8):
            clock.now += 1
            worker = first if index % 2 else second
            answers.append(worker.token("v1", new_flow(), provider).answer)
        assert answers.count(Answer.TOKEN) == 3
        assert answers[3:] == [Answer.OVER_BUDGET] * 5
        assert provider.calls == 4
    finally:
        second.close()
        first.close()


def test_the_budget_costs_no_extra_redis_command(
    redis_server: Any, provider: CountingProvider
) -> None:
    """The same commands for each event of a flow, with the budget on and off."""

    def commands(budget: MintBudget | None) -> list[list[str]]:
        store = RedisStore.from_url(redis_server.url, prefix=f"rt:{os.urandom(4).hex()}:")
        tracker = ActivationTracker(defensive(mint_budget=budget), store)
        tracker.token_request("warm-up", new_flow(), provider)  # the store's first-use checks
        flow = new_flow()
        seen = []
        for action in (
            lambda: tracker.token_request("v", flow, provider),
            lambda: tracker.token_request("v", flow, provider),  # the tag's retry
            lambda: tracker.report("v", flow, callback(True, SECURED)),
            lambda: tracker.token_request("v", new_flow(), provider),  # a refresh
            lambda: tracker.logout("v"),
        ):
            with commands_sent(store) as sent:
                action()
            seen.append(list(sent))
        store.close()
        return seen

    with_budget, without = commands(MintBudget()), commands(None)
    assert with_budget == without
    assert [len(c) for c in with_budget[:2]] == [2, 2]  # the claim and the settlement


# -- single-flight refreshes --------------------------------------------------------
def test_a_refresh_claims_the_visitor_so_a_second_one_is_refused(
    face: Face, issuer: TokenIssuer, clock: Clock
) -> None:
    """While one refresh mints, another tab's refresh (on any worker) is refused."""
    issue = partial(issuer.issue, "visitor-42")
    authenticate(face, issue)
    during: list[Any] = []
    if face.kind == "blocking":

        def provider() -> str:
            during.append(face.tracker.token_request("v1", new_flow(), issue))
            return issue()

        reply = face.token("v1", new_flow(), provider)
    else:

        async def async_provider() -> str:
            during.append(await face.tracker.token_request("v1", new_flow(), issue))
            return issue()

        reply = face.token("v1", new_flow(), async_provider)
    assert reply.answer is Answer.TOKEN
    assert [(r.answer, r.reason) for r in during] == [(Answer.REFUSED, FailureReason.LOGIN_ONGOING)]
    view = face.view("v1")
    assert view is not None
    assert view.state is State.AUTHENTICATED
    assert view.lease_until is None  # the claim is released with the refresh
    clock.now += 1
    assert face.token("v1", new_flow(), issue).answer is Answer.TOKEN  # free again


def test_a_refresh_claim_that_lapses_frees_the_visitor(
    face: Face, provider: CountingProvider, clock: Clock
) -> None:
    """A worker claims a refresh and dies before settling it: the claim holds, then lapses."""
    from statemachine.engine._effects import FetchToken
    from statemachine.tracking import _record as records
    from statemachine.tracking._rules import claim_seconds, plan_token

    authenticate(face, provider)
    store, policy = face.tracker.store, face.tracker.policy
    current = store.load("v1")  # both faces' stores here have the blocking face too
    record = records.load(json.loads(current.data), policy, clock)
    step = plan_token(record, "dead-worker", clock.now)
    assert step.changed
    assert isinstance(step.then, FetchToken)
    assert step.then.refresh
    data = json.dumps(records.dump(record))
    assert store.compare_and_set("v1", current.version, data, 60)[0]  # ... and nothing more
    assert face.token("v1", new_flow(), provider).answer is Answer.REFUSED
    clock.now += claim_seconds(policy) + 0.1
    assert face.token("v1", new_flow(), provider).answer is Answer.TOKEN


# -- a full memory store ------------------------------------------------------------------
def test_a_full_memory_store_drops_settled_visitors_oldest_first(logs: list[Any]) -> None:
    now = [0.0]
    store = MemoryStore(max_entries=3, clock=lambda: now[0])
    for key in ("a", "b", "c"):
        assert store.compare_and_set(key, 0, key, 100)[0]
        now[0] += 1
    assert store.compare_and_set("a", 1, "a2", 100)[0]  # a changed: b is now the oldest
    assert store.compare_and_set("d", 0, "d", 100)[0]
    assert sorted(store.keys()) == ["a", "c", "d"]
    assert store.compare_and_set("e", 0, "e", 100)[0]
    assert sorted(store.keys()) == ["a", "d", "e"]
    assert store.evicted == 2
    dropped = [e for e in logs if e["event"] == "activation.store_evicted"]
    assert len(dropped) == 1  # one line for the burst, not one per drop
    assert dropped[0]["dropped"] == 1
    now[0] += 11
    assert store.compare_and_set("f", 0, "f", 100)[0]
    dropped = [e for e in logs if e["event"] == "activation.store_evicted"]
    assert [e["dropped"] for e in dropped] == [1, 2]  # the next line counts since the last


def test_a_full_memory_store_never_drops_a_visitor_in_flight() -> None:
    now = [0.0]
    store = MemoryStore(max_entries=3, clock=lambda: now[0])
    assert store.compare_and_set("flying", 0, "x", 100, in_flight_for=30)[0]
    now[0] += 1
    assert store.compare_and_set("s1", 0, "x", 100)[0]
    assert store.compare_and_set("s2", 0, "x", 100)[0]
    assert store.compare_and_set("n1", 0, "x", 100)[0]
    assert store.compare_and_set("n2", 0, "x", 100, in_flight_for=30)[0]
    assert sorted(store.keys()) == ["flying", "n1", "n2"]
    n1 = store.load("n1")
    assert n1 is not None
    assert store.compare_and_set("n1", n1.version, "x", 100, in_flight_for=30)[0]  # in flight
    with pytest.raises(StoreError, match="every one in flight"):
        store.compare_and_set("late", 0, "x", 100)
    assert store.refused == 1
    assert store.load("flying") is not None
    now[0] += 31  # the oldest flow outlived what its writer announced: it may go
    assert store.compare_and_set("late", 0, "x", 100)[0]
    assert store.load("flying") is None
    assert sorted(store.keys()) == ["late", "n1", "n2"]


def test_the_tracker_tells_the_store_which_visitors_are_in_flight(
    face_kind: str, provider: CountingProvider, clock: Clock
) -> None:
    store = MemoryStore(max_entries=4)
    face = make_face(face_kind, store, clock)
    try:
        flying = new_flow()
        assert face.token("flying", flying, provider).answer is Answer.TOKEN  # no report: in flight
        for index in range(40):
            authenticate(face, provider, f"settled-{index}")
        view = face.view("flying")
        assert view is not None
        assert view.state is State.ACTIVATING
        assert store.evicted == 40 - 3
        assert face.report("flying", flying, callback(True, SECURED)).state is State.AUTHENTICATED
    finally:
        face.close()


# -- signals --------------------------------------------------------------------------
def test_refusals_and_drops_are_logged_and_exported(
    provider: CountingProvider, clock: Clock, logs: list[Any]
) -> None:
    store = MemoryStore(max_entries=2)
    face = make_face("blocking", store, clock, mint_budget=MintBudget(1, 60))
    metrics = ActivationMetrics()
    face.tracker.add_listener(metrics)
    try:
        authenticate(face, provider)
        for _ in range(5):
            clock.now += 1
            assert face.token("v1", new_flow(), provider).answer is Answer.OVER_BUDGET
        seen = face.tracker.view("v1")
        assert seen is not None
        authenticate(face, provider, "v2")
        authenticate(face, provider, "v3")
    finally:
        face.close()
    spent = [e for e in logs if e["event"] == "activation.budget_spent"]
    assert len(spent) == 1  # five refusals, one line
    assert spent[0]["session_id"] == seen.session_id  # as its transition lines name it
    assert "v1" not in json.dumps(spent[0], default=str)  # the host's visitor id stays out
    assert "token" not in json.dumps(spent[0], default=str).replace("tokens", "")
    text = metrics.render().decode()
    assert 'secured_activation_budget_refusals_total{policy="defensive"} 5.0' in text
    assert "secured_activation_store_evicted_total 1.0" in text
    assert "secured_activation_store_full_refusals_total 0.0" in text


def test_the_inspector_shows_a_spent_budget(issuer: TokenIssuer) -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from statemachine import AsyncActivationTracker
    from statemachine.web import inspector_routes
    from statemachine.web.inspector import References

    names = References(b"the inspector's secret, 32 bytes")
    tracker = AsyncActivationTracker(defensive(mint_budget=MintBudget(1, 60)), MemoryStore())
    mint = partial(issuer.issue, "visitor-42")
    routes = inspector_routes(  # the host admits its admin
        tracker, guard=lambda _request: True, secret=b"the inspector's secret, 32 bytes"
    )
    with TestClient(Starlette(routes=routes)) as client:
        reply = client.portal.call(tracker.token_request, "v1", new_flow(), mint)
        assert reply.answer is Answer.TOKEN
        reply = client.portal.call(tracker.token_request, "v1", new_flow(), mint)
        assert reply.answer is Answer.REFUSED  # the first flow is in flight
        shown = client.get(f"/inspect/visitor/{names.handle('v1')}").json()
    assert shown["mint_budget_left"] == 0


_REFUSING_WORKER = """
import sys
from functools import partial

from policies import DefensivePolicy, MintBudget
from statemachine import ActivationTracker, Answer
from statemachine.signals.metrics import ActivationMetrics
from statemachine.tokens import TokenIssuer, generate_rsa

refusals = int(sys.argv[1])
issuer = TokenIssuer(generate_rsa(), generate_rsa(), "https://brand.example")
tracker = ActivationTracker(DefensivePolicy(mint_budget=MintBudget(1, 60)))
metrics = ActivationMetrics()
tracker.add_listener(metrics)
mint = partial(issuer.issue, "visitor-42")
assert tracker.token_request("v", "first", mint).answer is Answer.TOKEN
for index in range(refusals):
    assert tracker.token_request("v", f"again{index}", mint).answer is Answer.REFUSED
tracker.report("v", "first", {"authentication": {"option": {"type": "SECURED_AUTHENTICATION"},
                                                  "status": "authentication-success"}})
for index in range(refusals):
    assert tracker.token_request("v", f"more{index}", mint).answer is Answer.OVER_BUDGET
print(metrics.render().decode())
"""


def test_budget_refusals_are_summed_across_worker_processes(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, each worker's refusals land in the shared files."""
    import subprocess
    import sys

    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    rendered = ""
    for refusals in (2, 3):  # two worker processes, one after the other
        done = subprocess.run(
            [sys.executable, "-c", _REFUSING_WORKER, str(refusals)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        rendered = done.stdout
    assert 'secured_activation_budget_refusals_total{policy="defensive"} 5.0' in rendered

"""The tracker on a real Redis: restarts, outages, OS processes racing, round trips."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections import Counter
from functools import partial
from typing import Any

import pytest
import redis

from statemachine import ActivationTracker, Answer, AsyncActivationTracker, State
from statemachine.protocol.options import SECURED
from statemachine.stores import DamagedRecord, RedisStore, StoreError
from statemachine.tokens import TokenIssuer
from statemachine.tracking._rules import claim_seconds
from tests.helpers import anonymous, defensive
from tests.redis_server import RedisServer, commands_sent
from tests.tracker_harness import Clock, CountingProvider, Face, callback, new_flow


def _prefix() -> str:
    return f"test:{os.urandom(6).hex()}:"


def test_a_visitor_survives_a_restarted_worker(redis_server: Any, issuer: TokenIssuer) -> None:
    prefix = _prefix()
    provider = CountingProvider(partial(issuer.issue, "visitor-1"))
    first = ActivationTracker(defensive(), RedisStore.from_url(redis_server.url, prefix=prefix))
    flow = new_flow()
    assert first.token_request("v", flow, provider).answer is Answer.TOKEN
    del first  # the worker is gone; only Redis remembers

    restarted = ActivationTracker(defensive(), RedisStore.from_url(redis_server.url, prefix=prefix))
    assert restarted.view("v").state is State.ACTIVATING
    assert restarted.token_request("v", new_flow(), provider).answer is Answer.REFUSED
    assert restarted.report("v", flow, callback(True, SECURED)).state is State.AUTHENTICATED


def test_keys_carry_the_prefix_and_expire_with_the_session_lifetime(
    redis_server: Any, issuer: TokenIssuer
) -> None:
    prefix = _prefix()
    tracker = ActivationTracker(defensive(), RedisStore.from_url(redis_server.url, prefix=prefix))
    tracker.token_request("v", new_flow(), partial(issuer.issue, "u"))
    client = redis.Redis.from_url(redis_server.url)
    assert client.exists(prefix + "v") == 1
    ttl = client.pttl(prefix + "v")
    assert 3_590_000 < ttl <= 3_600_000
    assert tracker.store.keys() == ["v"]


def test_round_trips_per_event(redis_server: Any, issuer: TokenIssuer) -> None:
    """A token request for a new visitor is two round trips: the claim and its settlement."""
    store = RedisStore.from_url(redis_server.url, prefix=_prefix())
    tracker = ActivationTracker(defensive(), store)
    provider = partial(issuer.issue, "u")
    tracker.token_request("warm-up", new_flow(), provider)  # loads the scripts, checks CONFIG once
    sent: list[str] = []

    def count(action: Any) -> int:
        with commands_sent(store) as seen:
            action()
        sent[:] = seen
        return len(seen)

    flow = new_flow()
    assert count(lambda: tracker.token_request("v", flow, provider)) == 2
    assert sent == ["EVALSHA", "EVALSHA"]
    assert count(lambda: tracker.token_request("v", flow, provider)) == 2  # the tag's retry
    assert count(lambda: tracker.report("v", flow, callback(True, SECURED))) == 2
    assert sent == ["EVALSHA", "EVALSHA"]  # a read is a script too: it reads Redis's clock
    assert count(lambda: tracker.token_request("v", new_flow(), provider)) == 2  # a refresh:
    assert sent == ["EVALSHA", "EVALSHA"]  # it claims the visitor as a first flow does, settles
    other = ActivationTracker(defensive(), store)  # another worker: its guess conflicts...
    assert count(lambda: other.token_request("v", new_flow(), provider)) == 3  # ...a refresh
    assert sent == ["EVALSHA", "EVALSHA", "EVALSHA"]  # the conflict returned it: no extra read
    tracker.logout("v")
    assert count(lambda: other.token_request("v", new_flow(), provider)) == 3  # conflict+claim
    assert count(lambda: tracker.view("v")) == 1


@pytest.mark.parametrize("policy", [defensive, anonymous], ids=["defensive", "anonymous"])
def test_a_hung_redis_gets_the_policys_answer_in_bounded_time_and_resumes(
    own_redis: RedisServer, issuer: TokenIssuer, policy: Any
) -> None:
    store = RedisStore.from_url(own_redis.url, prefix=_prefix(), timeout=0.3)
    tracker = ActivationTracker(policy(), store)
    provider = CountingProvider(partial(issuer.issue, "u"))
    flow = new_flow()
    assert tracker.token_request("v", flow, provider).answer is Answer.TOKEN
    before = store.load("v")

    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)  # hung: connections open, no answers
    try:
        started = time.monotonic()
        reply = tracker.token_request("w", new_flow(), provider)
        elapsed = time.monotonic() - started
        assert elapsed < 3.0
        expected = Answer.DO_NOT_ACTIVATE if policy is defensive else Answer.ANONYMOUS
        assert reply.answer is expected
        assert reply.state is None
        assert provider.calls == 1  # nothing minted while the store is away
        with pytest.raises(StoreError, match="redis"):
            tracker.report("v", flow, callback(True, SECURED))
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)

    assert store.load("v") == before  # nothing half-written
    assert tracker.report("v", flow, callback(True, SECURED)).state is State.AUTHENTICATED
    # The claim for "w" timed out on our side; Redis may have applied it once resumed. Either
    # way "w" is whole: absent, or a claim that lets go after the provider's timeout.
    held = tracker.view("w")
    if held is not None:
        assert held.state is State.FETCHING_TOKEN
        assert held.lease_until is not None
        assert held.lease_until <= time.time() + claim_seconds(tracker.policy)
    assert tracker.token_request("x", new_flow(), provider).answer is Answer.TOKEN


def test_a_stopped_redis_is_a_store_error_and_service_resumes(
    own_redis: RedisServer, issuer: TokenIssuer
) -> None:
    store = RedisStore.from_url(own_redis.url, prefix=_prefix(), timeout=0.3)
    tracker = ActivationTracker(defensive(), store)
    provider = partial(issuer.issue, "u")
    own_redis.stop()
    started = time.monotonic()
    reply = tracker.token_request("v", new_flow(), provider)
    assert time.monotonic() - started < 3.0
    assert (reply.answer, reply.to_dict()["activate"]) == (Answer.DO_NOT_ACTIVATE, False)
    with pytest.raises(StoreError):
        tracker.view("v")
    own_redis.start()
    assert tracker.token_request("v", new_flow(), provider).answer is Answer.TOKEN


def test_async_tracker_on_redis_down(own_redis: RedisServer, issuer: TokenIssuer) -> None:
    async def scenario() -> None:
        store = RedisStore.from_url(own_redis.url, prefix=_prefix(), timeout=0.3)
        tracker = AsyncActivationTracker(defensive(), store)
        own_redis.stop()
        reply = await tracker.token_request("v", new_flow(), partial(issuer.issue, "u"))
        assert reply.answer is Answer.DO_NOT_ACTIVATE
        await store.aclose()

    asyncio.run(scenario())


def test_a_damaged_stored_visitor_is_a_store_error(redis_server: Any) -> None:
    prefix = _prefix()
    client = redis.Redis.from_url(redis_server.url)
    client.hset(prefix + "v", mapping={"v": 1, "d": '{"format": 99}'})
    client.hset(prefix + "w", mapping={"v": 1, "d": "not json"})
    tracker = ActivationTracker(defensive(), RedisStore.from_url(redis_server.url, prefix=prefix))
    for visitor in ("v", "w"):
        with pytest.raises(StoreError, match="stored visitor"):
            tracker.view(visitor)
        assert tracker.token_request(visitor, new_flow(), lambda: "t").answer is (
            Answer.DO_NOT_ACTIVATE
        )


@pytest.mark.parametrize("kind", ["async", "blocking"])
def test_a_logout_repairs_a_damaged_or_unknown_format_record(
    redis_server: Any, issuer: TokenIssuer, kind: str
) -> None:
    prefix = _prefix()
    client = redis.Redis.from_url(redis_server.url)
    client.hset(prefix + "v", mapping={"v": 1, "d": '{"format": 99}'})  # a newer format
    client.hset(prefix + "w", mapping={"v": 7, "d": "not json"})  # damaged
    face = Face(kind, defensive(), RedisStore.from_url(redis_server.url, prefix=prefix), Clock())
    try:
        for visitor in ("v", "w"):
            with pytest.raises(DamagedRecord):
                face.view(visitor)
            view = face.logout(visitor)  # overwrites what nobody can read
            assert view is not None
            assert view.state is State.UNAUTHENTICATED
            flow = new_flow()
            reply = face.token(visitor, flow, partial(issuer.issue, "u"))
            assert reply.answer is Answer.TOKEN  # the visitor can sign in again
            assert face.report(visitor, flow, callback(True, SECURED)).state is (
                State.AUTHENTICATED
            )
    finally:
        face.close()


DAMAGED_BEYOND_JSON = {
    # nested past the JSON parser's recursion limit: RecursionError, not ValueError
    "deep": {"v": 3, "d": "[" * 100_000},
    "deep-session": {
        "v": 3,
        "d": '{"format":2,"flow_id":null,"lease_until":null,"ended_flows":[],"session":'
        + "[" * 5_000
        + "]" * 5_000
        + "}",
    },
    "not-utf8": {"v": 4, "d": b'{"format":2,\xff\xfe}'},  # bytes Redis holds, not text
    "no-data": {"v": 5},  # the hash lost its snapshot: neither absent nor readable
}


@pytest.mark.parametrize("version", [b"\xff", b"abc", b"1.5", b" 7", b"07", b"1_000", b"9" * 5000])
@pytest.mark.parametrize("kind", ["async", "blocking"])
def test_a_stored_version_that_is_not_a_number_is_a_store_error(
    redis_server: Any, kind: str, version: bytes
) -> None:
    """A version no write of ours made: every path answers a one-line StoreError (the token
    request, the policy's answer), never an exception of another kind."""
    prefix = _prefix()
    client = redis.Redis.from_url(redis_server.url)
    client.hset(prefix + "v", mapping={"v": version, "d": "{}"})
    face = Face(kind, defensive(), RedisStore.from_url(redis_server.url, prefix=prefix), Clock())
    try:
        with pytest.raises(StoreError, match="version"):
            face.view("v")
        with pytest.raises(StoreError, match="version"):
            face.report("v", new_flow(), callback(True, SECURED))
        with pytest.raises(StoreError, match="version"):
            face.logout("v")
        reply = face.token("v", new_flow(), lambda: "t")
        assert reply.answer is Answer.DO_NOT_ACTIVATE
    finally:
        face.close()


def test_the_inspector_lists_keys_nobody_can_read_as_damaged(
    redis_server: Any, issuer: TokenIssuer
) -> None:
    """One key under the prefix that holds no record of ours (a version no write made, a
    key of another type) is listed as damaged, never a failed listing of every visitor."""
    from statemachine.web.http import Headers, HttpRequest, InspectorHttp

    prefix = _prefix()
    client = redis.Redis.from_url(redis_server.url)
    client.hset(prefix + "bad-version", mapping={"v": "abc", "d": "{}"})
    client.set(prefix + "a-string", "hello")
    tracker = ActivationTracker(defensive(), RedisStore.from_url(redis_server.url, prefix=prefix))
    try:
        tracker.token_request("v", new_flow(), partial(issuer.issue, "u"))
        for visitor in ("bad-version", "a-string"):
            with pytest.raises(DamagedRecord):
                tracker.view(visitor)
            with pytest.raises(StoreError):
                tracker.logout(visitor)
            reply = tracker.token_request(visitor, new_flow(), lambda: "t")
            assert reply.answer is Answer.DO_NOT_ACTIVATE
        core = InspectorHttp(tracker, secret=b"s" * 32)
        listing = core.handle(
            HttpRequest("GET", "/inspect/visitors", Headers([]), b"", client="127.0.0.1")
        )
        assert listing.status == 200
        assert listing.body.count(b'"state":"damaged"') == 2
        assert listing.body.count(b'"state":"activating"') == 1
    finally:
        tracker.store.close()


@pytest.mark.parametrize("damage", sorted(DAMAGED_BEYOND_JSON))
@pytest.mark.parametrize("kind", ["async", "blocking"])
def test_a_record_damaged_beyond_json_is_damaged_and_repaired_by_logout(
    redis_server: Any, issuer: TokenIssuer, kind: str, damage: str
) -> None:
    """Every read path answers a damaged record as documented (DamagedRecord; the policy's
    answer to a token request; a logout repairs it), whatever the damage."""
    prefix = _prefix()
    client = redis.Redis.from_url(redis_server.url)
    client.hset(prefix + "v", mapping=DAMAGED_BEYOND_JSON[damage])
    face = Face(kind, defensive(), RedisStore.from_url(redis_server.url, prefix=prefix), Clock())
    try:
        with pytest.raises(DamagedRecord):
            face.view("v")
        reply = face.token("v", new_flow(), partial(issuer.issue, "u"))
        assert reply.answer is Answer.DO_NOT_ACTIVATE
        with pytest.raises(DamagedRecord):
            face.report("v", new_flow(), callback(True, SECURED))
        view = face.logout("v")  # overwrites what nobody can read
        assert view is not None
        assert view.state is State.UNAUTHENTICATED
        flow = new_flow()
        assert face.token("v", flow, partial(issuer.issue, "u")).answer is Answer.TOKEN
        assert face.report("v", flow, callback(True, SECURED)).state is State.AUTHENTICATED
    finally:
        face.close()


def test_a_bad_byte_inside_a_text_field_is_damage_not_a_replacement_character(
    redis_server: Any, issuer: TokenIssuer
) -> None:
    """A record that is valid JSON but for one byte that is not UTF-8, inside a field whose
    text nothing else checks (the policy's name): read with the byte replaced, it passed as
    a valid record; it is damaged, and a logout repairs it."""
    prefix = _prefix()
    client = redis.Redis.from_url(redis_server.url)
    tracker = ActivationTracker(defensive(), RedisStore.from_url(redis_server.url, prefix=prefix))
    try:
        assert tracker.token_request("v", new_flow(), partial(issuer.issue, "u")).option
        stored = client.hget(prefix + "v", "d")
        assert stored is not None
        assert b'"defensive"' in stored
        client.hset(prefix + "v", "d", stored.replace(b'"defensive"', b'"d\xffefensive"'))
        with pytest.raises(DamagedRecord):
            tracker.view("v")
        view = tracker.logout("v")
        assert view is not None
        assert view.state is State.UNAUTHENTICATED
    finally:
        tracker.store.close()


# -- two OS processes racing -------------------------------------------------------
VISITORS = 60
RACE_STORE_TIMEOUT = 10.0  # seconds per store call; the store's default is tuned for live hosts


def _race(url: str, prefix: str, name: str, start_at: float, queue: Any) -> None:
    """One worker process: its own keys, tracker and event loop; all visitors at once."""
    from statemachine.tokens import TokenIssuer, generate_rsa

    issuer = TokenIssuer(generate_rsa(), generate_rsa(), "https://brand.example")
    calls = Counter[str]()

    async def run() -> list[tuple[str, str]]:
        # 60 visitors open their connections at once while the other process does the same and
        # every mint holds the CPU: on a loaded machine a connect can take seconds. The race's
        # outcome is what this test checks, not Redis's latency, so the store waits generously.
        store = RedisStore.from_url(url, prefix=prefix, timeout=RACE_STORE_TIMEOUT)
        tracker = AsyncActivationTracker(defensive(), store)

        async def one(index: int) -> tuple[str, str]:
            def provider() -> str:
                calls[f"v{index}"] += 1
                return issuer.issue(f"user-{index}")

            reply = await tracker.token_request(f"v{index}", f"{name}-{index}", provider)
            return f"v{index}", reply.answer.value

        await asyncio.sleep(max(0.0, start_at - time.time()))
        results = await asyncio.gather(*(one(i) for i in range(VISITORS)))
        await tracker.store.aclose()
        return list(results)

    results = asyncio.run(run())
    queue.put((name, results, dict(calls)))


def test_two_processes_racing_for_the_same_visitors(redis_server: Any) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    prefix = _prefix()
    start_at = time.time() + 3.0  # both are up by then: they start from the same instant
    workers = [
        context.Process(target=_race, args=(redis_server.url, prefix, name, start_at, queue))
        for name in ("a", "b")
    ]
    for worker in workers:
        worker.start()
    outcomes = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0

    answers: dict[str, list[str]] = {}
    minted = Counter[str]()
    for _, results, calls in outcomes:
        for visitor, answer in results:
            answers.setdefault(visitor, []).append(answer)
        minted.update(calls)
    assert len(answers) == VISITORS
    for visitor, pair in answers.items():
        assert sorted(pair) == ["refused", "token"], visitor  # exactly one flow wins
        assert minted[visitor] == 1, visitor  # and the loser minted nothing
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    tracker = ActivationTracker(defensive(), store)
    for index in range(VISITORS):
        view = tracker.view(f"v{index}")
        assert view is not None
        assert view.state is State.ACTIVATING
        assert view.attempts == 1
    store.close()

"""The Redis store against real faults: bursts, retried writes, lost writes, skewed clocks, stalls.

Every Redis here is a real redis-server on a loopback port, started and
stopped by the tests; tokens are real JWEs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from functools import partial
from typing import Any

import pytest
import redis
import redis.asyncio

from statemachine import ActivationTracker, Answer, AsyncActivationTracker, State
from statemachine.protocol.options import SECURED
from statemachine.stores import RedisStore, StoreError
from statemachine.stores.redis import _CAS_SCRIPT, _run_script, parse_target
from statemachine.tokens import TokenIssuer
from tests.helpers import defensive
from tests.redis_server import RedisServer
from tests.tracker_harness import callback, new_flow


def _prefix() -> str:
    return f"test:{os.urandom(6).hex()}:"


# -- URLs and prefixes ------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://user:secret@cache.example:6380/2",
        "unix:///run/redis.sock",
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
        "redis+cluster://:secret@[::1]:7000",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster",
        "redis+sentinel://10.0.0.1/mymaster/3",
    ],
)
def test_every_url_form_is_taken(url: str) -> None:
    assert RedisStore.from_url(url).prefix


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "redis+cluster://",
        "redis+cluster://h:notaport",
        "redis+cluster://h:1/3",
        "redis+sentinel://h:26379",
        "redis+sentinel://h:26379/svc/x",
        42,
    ],
)
def test_bad_urls_are_refused_in_one_line(url: Any) -> None:
    with pytest.raises(ValueError, match=r"URL|port|host|database|service|Cluster") as caught:
        RedisStore.from_url(url)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("tolerance", [float("inf"), float("nan"), -1.0, 0.0, "2", True, None])
def test_a_clock_tolerance_that_is_no_time_is_refused_when_the_store_is_made(
    redis_server: Any, tolerance: Any
) -> None:
    """Refused as the timeout is, in one line: taken, an infinite one made every write raise
    OverflowError (a token request's traceback, not the policy's answer), a negative or zero
    one refused every write (16 conflicts, then the store counted as down), NaN ValueError."""
    with pytest.raises(ValueError, match="clock_tolerance"):
        RedisStore(url=redis_server.url, clock_tolerance=tolerance)
    assert RedisStore(url=redis_server.url, clock_tolerance=0.5).clock_tolerance == 0.5


def test_cluster_and_sentinel_urls_are_read_exactly() -> None:
    cluster = parse_target("redis+cluster://u:p%40ss@h1:7000,h2,[::1]:7002")
    assert cluster.nodes == (("h1", 7000), ("h2", 6379), ("::1", 7002))
    assert (cluster.username, cluster.password) == ("u", "p@ss")
    sentinel = parse_target("redis+sentinel://s1:5000,s2/svc/4")
    assert sentinel.nodes == (("s1", 5000), ("s2", 26379))
    assert (sentinel.service, sentinel.db) == ("svc", 4)


@pytest.mark.parametrize("prefix", ["{visitors}:", "a}b", "{", ""])
def test_a_prefix_with_a_hash_tag_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisStore.from_url("redis://127.0.0.1:6379/0", prefix=prefix)


# -- writes that know themselves ----------------------------------------------------
def test_a_write_retried_after_a_timeout_finds_itself(redis_server: Any) -> None:
    """The same write sent twice (the client's retry after a lost reply) succeeds twice."""
    store = RedisStore.from_url(redis_server.url, prefix=_prefix())
    client = store.client()
    args = [0, "first", 60_000, 123456789, "", 2000]
    key = store.prefix + "v"
    assert int(_run_script(client, _CAS_SCRIPT, key, args)[0]) == 1
    assert int(_run_script(client, _CAS_SCRIPT, key, args)[0]) == 1  # found its own write: success
    assert store.load("v") == (123456789, "first")
    other = [0, "second", 60_000, 987654321, "", 2000]  # another writer, same expectation
    assert int(_run_script(client, _CAS_SCRIPT, key, other)[0]) == 0
    assert store.load("v") == (123456789, "first")


def test_versions_are_random_write_ids_never_counters(redis_server: Any) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=_prefix())
    ok, first = store.compare_and_set("v", 0, "a", 60)
    assert ok
    assert first is not None
    ok, second = store.compare_and_set("v", first.version, "b", 60)
    assert ok
    assert second is not None
    assert second.version not in (0, first.version, first.version + 1)
    # A stale expectation (a version a failover brought back) matches nothing.
    assert store.compare_and_set("v", first.version, "c", 60) == (False, second)


# -- the store's clock -------------------------------------------------------------
def test_a_write_decided_on_a_skewed_clock_is_refused_then_corrected(redis_server: Any) -> None:
    store = RedisStore(
        url=redis_server.url, prefix=_prefix(), clock=lambda: time.time() + 30.0
    )  # this machine runs 30 s ahead of Redis
    assert store.now() > time.time() + 29  # nothing measured yet
    ok, current = store.compare_and_set("v", 0, "a", 60, now=store.now())
    assert (ok, current) == (False, None)  # refused: decided 30 s off Redis's clock
    assert abs(store.clock_offset + 30.0) < 1.0  # measured from the refusal
    assert abs(store.now() - time.time()) < 1.0
    ok, current = store.compare_and_set("v", 0, "a", 60, now=store.now())
    assert ok


def test_two_trackers_one_clock_30s_ahead_hand_out_one_token(
    redis_server: Any, issuer: TokenIssuer
) -> None:
    """Tab 1 on an honest worker, tab 2 on a worker whose clock runs 30 s ahead: one token."""
    prefix = _prefix()
    policy = defensive()  # its lease is far shorter than 30 s
    honest = ActivationTracker(policy, RedisStore.from_url(redis_server.url, prefix=prefix))
    ahead_store = RedisStore(url=redis_server.url, prefix=prefix, clock=lambda: time.time() + 30)
    ahead = ActivationTracker(policy, ahead_store)
    provider = partial(issuer.issue, "u")
    first = honest.token_request("v", new_flow(), provider)
    assert first.answer is Answer.TOKEN
    second = ahead.token_request("v", new_flow(), provider)
    assert second.answer is Answer.REFUSED  # the first tab's flow is in flight
    view = honest.view("v")
    assert view is not None
    assert view.state is State.ACTIVATING
    # The skewed worker writes times on Redis's clock, not its own.
    assert view.lease_until is not None
    assert view.lease_until < time.time() + 60


# -- bursts and stalls --------------------------------------------------------------
def test_300_concurrent_token_requests_on_one_tracker_get_no_store_down_answer(
    redis_server: Any, issuer: TokenIssuer
) -> None:
    tokens = [issuer.issue(f"user-{i}") for i in range(300)]

    async def scenario() -> list[Any]:
        # A generous timeout: this checks that a burst waits for a connection, not speed.
        store = RedisStore.from_url(redis_server.url, prefix=_prefix(), timeout=3.0)
        tracker = AsyncActivationTracker(defensive(), store)

        async def one(index: int) -> Any:
            async def provider() -> str:
                return tokens[index]

            return await tracker.token_request(f"v{index}", f"flow-{index}", provider)

        try:
            return list(await asyncio.gather(*(one(i) for i in range(300))))
        finally:
            await store.aclose()

    replies = asyncio.run(scenario())
    assert [r.answer for r in replies].count(Answer.TOKEN) == 300


def test_a_stall_past_the_timeout_leaves_no_visitor_stuck(
    own_redis: RedisServer, issuer: TokenIssuer
) -> None:
    """DEBUG SLEEP: the claim times out on our side (and may land); the flow's next request works."""
    store = RedisStore.from_url(own_redis.url, prefix=_prefix(), timeout=0.2)
    tracker = ActivationTracker(defensive(), store)
    provider = partial(issuer.issue, "u")
    assert tracker.token_request("warm", new_flow(), provider).answer is Answer.TOKEN
    stall = redis.Redis(port=own_redis.port, socket_timeout=10)
    sleeper = threading.Thread(target=stall.execute_command, args=("DEBUG", "SLEEP", "2"))
    sleeper.start()
    probe = redis.Redis(port=own_redis.port, socket_timeout=0.05, retry=None)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the server is seen asleep (no timing guess)
        try:
            probe.ping()
        except redis.TimeoutError:
            break
        time.sleep(0.01)
    probe.close()
    flow = new_flow()
    try:
        started = time.monotonic()
        reply = tracker.token_request("v", flow, provider)
        assert time.monotonic() - started < 3.0
        assert reply.answer is Answer.DO_NOT_ACTIVATE  # the policy's answer while it stalls
    finally:
        sleeper.join(10)
        stall.close()
    again = tracker.token_request("v", flow, provider)
    assert again.answer is Answer.TOKEN, again
    assert tracker.report("v", flow, callback(True, SECURED)).state is State.AUTHENTICATED


def test_a_failover_that_loses_a_write_never_hands_out_two_tokens(
    redis_server: Any, issuer: TokenIssuer
) -> None:
    """Between tab 1's claim and its settlement the claim is lost (the key restored to what it
    was) and tab 2, on another worker, claims: only tab 2 may get a token."""
    prefix = _prefix()
    raw = redis.Redis.from_url(redis_server.url)
    first_worker = ActivationTracker(
        defensive(), RedisStore.from_url(redis_server.url, prefix=prefix)
    )
    second_worker = ActivationTracker(
        defensive(), RedisStore.from_url(redis_server.url, prefix=prefix)
    )
    # The visitor's last page load ended settled (blocked); both workers know that version.
    assert (
        first_worker.token_request("v", "old-flow", lambda: None).answer is Answer.DO_NOT_ACTIVATE
    )
    assert second_worker.view("v") is not None
    before = raw.dump(prefix + "v")
    assert before is not None
    replies: dict[str, Any] = {}

    def tab_one_provider() -> str:
        # Tab 1 has claimed; a failover loses that write ...
        raw.restore(prefix + "v", 0, before, replace=True)
        # ... and tab 2 claims and settles on the promoted replica.
        replies["tab2"] = second_worker.token_request("v", "tab-two", partial(issuer.issue, "u"))
        return issuer.issue("u")

    replies["tab1"] = first_worker.token_request("v", "tab-one", tab_one_provider)
    answers = {tab: reply.answer for tab, reply in replies.items()}
    assert answers == {"tab1": Answer.REFUSED, "tab2": Answer.TOKEN}
    view = first_worker.view("v")
    assert view is not None
    assert (view.state, view.flow_id) == (State.ACTIVATING, "tab-two")


def test_a_host_client_is_bounded_by_the_stores_timeout(own_redis: RedisServer) -> None:
    client = redis.Redis(port=own_redis.port)  # redis-py's default: no socket timeout
    client.ping()  # a connection already open
    store = RedisStore(client, prefix=_prefix(), timeout=0.3)
    bounded: Any = store.client()  # the host's settings, the store's timeouts
    assert bounded.connection_pool.connection_kwargs["socket_timeout"] == 0.3
    assert bounded.connection_pool.connection_kwargs["port"] == own_redis.port
    assert client.connection_pool.connection_kwargs.get("socket_timeout") != 0.3  # untouched
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError):
            store.load("v")
        assert time.monotonic() - started < 3.0
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert store.load("v") is None
    store.close()  # the store's own connections (the host's client stays the host's)
    client.close()


def test_a_host_async_client_is_bounded_by_the_stores_timeout(own_redis: RedisServer) -> None:
    async def scenario() -> float:
        client = redis.asyncio.Redis(port=own_redis.port)  # no socket timeout
        store = RedisStore(async_client=client, prefix=_prefix(), timeout=0.3)
        await client.ping()
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreError):
                await store.aload("v")
            return time.monotonic() - started
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
            await client.aclose()

    assert asyncio.run(scenario()) < 3.0


def test_an_unsafe_eviction_policy_is_logged_once(
    own_redis: RedisServer, logs: list[dict[str, Any]]
) -> None:
    redis.Redis(port=own_redis.port).config_set("maxmemory-policy", "allkeys-lru")
    store = RedisStore.from_url(own_redis.url, prefix=_prefix())
    store.load("a")
    store.load("b")
    store.compare_and_set("c", 0, "{}", 60)
    warnings = [e for e in logs if e["event"] == "activation.store_unsafe"]
    assert len(warnings) == 1
    assert warnings[0]["maxmemory_policy"] == "allkeys-lru"


def test_calls_that_come_during_the_first_asyncio_use_wait_for_it(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eviction check runs once, and no script is sent until it has ended.

    For an asyncio Cluster client the check is also the cluster's discovery,
    and commands sent while a fresh client settles its nodes can find their
    connection closed under them; here the check is slowed down so that five
    calls arrive while it runs.
    """
    from statemachine.stores import redis as redis_store

    happened: list[str] = []

    async def slow_check(client: Any, deadline: float) -> str | None:
        happened.append("check starts")
        await asyncio.sleep(0.05)
        happened.append("check ends")
        return "noeviction"

    monkeypatch.setattr(redis_store, "_aconfig_policy", slow_check)

    async def scenario() -> list[Any]:
        store = RedisStore.from_url(redis_server.url, prefix=_prefix())
        scripts = store._ascripts()
        run = scripts.run

        async def counted(*args: Any) -> Any:
            happened.append("script")
            return await run(*args)

        monkeypatch.setattr(scripts, "run", counted)
        try:
            return await asyncio.gather(*(store.aload(f"v{n}") for n in range(5)))
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == [None] * 5
    assert happened == ["check starts", "check ends"] + ["script"] * 5

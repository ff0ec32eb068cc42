"""The lanes to Redis (``stores._lane``): the same guarantees as redis-py's path.

Every test runs a real redis-server: credentials, a database, a unix socket,
a flushed script cache, a killed connection, a stall past the timeout, and
pipelined replies matched to their callers while others give up.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from statemachine import ActivationTracker, Answer, AsyncActivationTracker, State
from statemachine.protocol.options import SECURED
from statemachine.stores import RedisStore, StoreError
from statemachine.stores._lane import LaneSettings
from statemachine.tokens import TokenIssuer
from tests.helpers import defensive
from tests.redis_server import RedisServer
from tests.tracker_harness import callback, new_flow


def _prefix() -> str:
    return f"lane-{os.urandom(4).hex()}:"


def _uses_the_lane(store: RedisStore) -> bool:
    return store._lane_settings is not None


@pytest.mark.parametrize(
    ("url", "served"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("redis://user:secret@127.0.0.1:6379/3", True),
        ("redis://127.0.0.1", True),
        ("unix:///run/redis.sock?db=2", True),
        ("rediss://127.0.0.1:6379/0", False),  # TLS: redis-py's path
        ("redis://127.0.0.1:6379/0?socket_keepalive=true", False),  # an option: redis-py's
        ("redis+cluster://127.0.0.1:7000", False),
        ("redis+sentinel://127.0.0.1:26379/main", False),
    ],
)
def test_the_lane_serves_plain_urls_and_leaves_the_rest_to_redis_py(url: str, served: bool) -> None:
    settings = LaneSettings.from_url(url, 0.5)
    assert (settings is not None) is served
    assert _uses_the_lane(RedisStore.from_url(url)) is served


def test_a_host_async_client_keeps_redis_pys_path(redis_server: Any) -> None:
    store = RedisStore(async_client=redis.asyncio.Redis.from_url(redis_server.url))
    assert not _uses_the_lane(store)


def _flow_on(url: str, issuer: TokenIssuer, prefix: str) -> tuple[Any, Any]:
    """One visitor's token request and report through the async tracker on ``url``."""

    async def scenario() -> tuple[Any, Any]:
        store = RedisStore.from_url(url, prefix=prefix, timeout=1.0)
        assert _uses_the_lane(store)
        tracker = AsyncActivationTracker(defensive(), store)
        try:
            flow = new_flow()
            token = await tracker.token_request("v", flow, partial(issuer.issue, "u"))
            report = await tracker.report("v", flow, callback(True, SECURED))
            return token, report
        finally:
            await store.aclose()

    return asyncio.run(scenario())


def test_credentials_and_the_database_reach_redis(
    own_redis: RedisServer, issuer: TokenIssuer
) -> None:
    admin = redis.Redis(port=own_redis.port)
    admin.acl_setuser("lane", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"])
    admin.config_set("requirepass", "default-secret")
    prefix = _prefix()
    url = f"redis://lane:s3cret@127.0.0.1:{own_redis.port}/3"
    token, report = _flow_on(url, issuer, prefix)
    assert token.answer is Answer.TOKEN
    assert report.state is State.AUTHENTICATED
    in_db3 = redis.Redis(port=own_redis.port, db=3, username="lane", password="s3cret")
    assert in_db3.exists(prefix + "v") == 1
    assert redis.Redis(port=own_redis.port, password="default-secret").exists(prefix + "v") == 0

    async def wrong_password() -> None:
        bad = f"redis://lane:wrong@127.0.0.1:{own_redis.port}/3"
        store = RedisStore.from_url(bad, prefix=prefix, timeout=0.5)
        try:
            with pytest.raises(StoreError) as caught:
                await store.aload("v")
            message = str(caught.value)
            assert "WRONGPASS" in message
            assert "\n" not in message
            assert "wrong" not in message.replace("WRONGPASS", "")  # no credential echoed
        finally:
            await store.aclose()

    asyncio.run(wrong_password())
    in_db3.close()
    admin.close()


def test_a_unix_socket(tmp_path: Path, issuer: TokenIssuer) -> None:
    path = tmp_path / "redis.sock"
    server = RedisServer(tmp_path, extra=["--unixsocket", str(path), "--unixsocketperm", "700"])
    server.start()
    try:
        token, report = _flow_on(f"unix://{path}?db=1", issuer, _prefix())
        assert token.answer is Answer.TOKEN
        assert report.state is State.AUTHENTICATED
    finally:
        server.stop()


def _answers_after_each(
    url: str, issuer: TokenIssuer, fault: Any, visitors: list[str]
) -> list[Answer]:
    """One async token request per visitor in ``visitors``, each after ``fault(raw client)``."""

    async def scenario() -> list[Answer]:
        store = RedisStore.from_url(url, prefix=_prefix())
        tracker = AsyncActivationTracker(defensive(), store)
        raw = redis.Redis.from_url(url)
        answers = []
        try:
            for visitor in visitors:
                fault(raw)
                await asyncio.sleep(0.05)  # a closed connection reaches the loop (or not: both ok)
                reply = await tracker.token_request(visitor, new_flow(), partial(issuer.issue, "u"))
                answers.append(reply.answer)
        finally:
            raw.close()
            await store.aclose()
        return answers

    return asyncio.run(scenario())


def test_a_flushed_script_cache_is_answered_with_the_script(
    redis_server: Any, issuer: TokenIssuer
) -> None:
    # A restarted or newly promoted node knows no script. First a token; then the flow in
    # flight refuses the next tabs: no NOSCRIPT error ever surfaces.
    answers = _answers_after_each(
        redis_server.url, issuer, lambda raw: raw.script_flush(), ["v", "v", "v"]
    )
    assert answers == [Answer.TOKEN, Answer.REFUSED, Answer.REFUSED]


def test_a_killed_connection_is_replaced_without_a_failed_request(
    redis_server: Any, issuer: TokenIssuer
) -> None:
    def kill(raw: Any) -> None:  # drops the lane's connection
        raw.client_kill_filter(_type="normal", skipme=True)

    answers = _answers_after_each(redis_server.url, issuer, kill, [f"v{i}" for i in range(4)])
    assert answers == [Answer.TOKEN] * 4


def _until_asleep(port: int) -> None:
    """Until the server is seen asleep (no timing guess)."""
    probe = redis.Redis(port=port, socket_timeout=0.05, retry=None)
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            try:
                probe.ping()
            except redis.TimeoutError:
                return
            time.sleep(0.01)
    finally:
        probe.close()
    raise AssertionError("the server never went to sleep")


def test_a_stall_past_the_timeout_is_bounded_and_the_flow_goes_on(
    own_redis: RedisServer, issuer: TokenIssuer
) -> None:
    """DEBUG SLEEP: the lane gives up within its bound, closes the connection whose reply is
    still due, and the same flow's next request gets its token on a fresh one."""
    stall = redis.Redis(port=own_redis.port, socket_timeout=10)
    provider = partial(issuer.issue, "u")

    async def scenario() -> tuple[float, Answer, Answer, State]:
        store = RedisStore.from_url(own_redis.url, prefix=_prefix(), timeout=0.2)
        tracker = AsyncActivationTracker(defensive(), store)
        try:
            assert (
                await tracker.token_request("warm", new_flow(), provider)
            ).answer is Answer.TOKEN
            sleeper = threading.Thread(target=stall.execute_command, args=("DEBUG", "SLEEP", "1.5"))
            sleeper.start()
            await asyncio.to_thread(_until_asleep, own_redis.port)
            flow = new_flow()
            started = time.monotonic()
            stalled = await tracker.token_request("v", flow, provider)
            took = time.monotonic() - started
            await asyncio.to_thread(sleeper.join, 10)
            again = await tracker.token_request("v", flow, provider)
            report = await tracker.report("v", flow, callback(True, SECURED))
            return took, stalled.answer, again.answer, report.state
        finally:
            await store.aclose()

    took, stalled, again, state = asyncio.run(scenario())
    stall.close()
    assert took < 4 * 0.2 + 0.5  # the documented bound, plus scheduling on a shared machine
    assert stalled is Answer.DO_NOT_ACTIVATE  # the policy's answer while Redis stalls
    assert again is Answer.TOKEN
    assert state is State.AUTHENTICATED


def test_a_caller_that_gives_up_during_a_stall_leaves_the_others_their_bound(
    own_redis: RedisServer,
) -> None:
    """DEBUG SLEEP with three reads in flight on one connection, the oldest one cancelled:
    the two others still fail within the bound (the connection's one watchdog passes over a
    caller that left and times out the next), and the store answers once Redis is back."""
    stall = redis.Redis(port=own_redis.port, socket_timeout=10)

    async def scenario() -> tuple[float, list[object], object]:
        store = RedisStore.from_url(own_redis.url, prefix=_prefix(), timeout=0.2)
        try:
            assert await store.aload("warm") is None  # connected
            sleeper = threading.Thread(target=stall.execute_command, args=("DEBUG", "SLEEP", "2"))
            sleeper.start()
            await asyncio.to_thread(_until_asleep, own_redis.port)
            started = time.monotonic()
            reads = [asyncio.create_task(store.aload(f"v{index}")) for index in range(3)]
            await asyncio.sleep(0.05)
            reads[0].cancel()
            results = await asyncio.gather(*reads, return_exceptions=True)
            took = time.monotonic() - started
            await asyncio.to_thread(sleeper.join, 10)
            return took, results, await store.aload("v0")
        finally:
            await store.aclose()

    took, results, after = asyncio.run(scenario())
    stall.close()
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(result, StoreError) for result in results[1:]), results
    assert took < 4 * 0.2 + 0.5  # the documented bound (the stall lasts 2 s)
    assert after is None


def test_pipelined_replies_reach_their_callers_while_others_give_up(redis_server: Any) -> None:
    """200 concurrent reads of distinct visitors on one connection, a third of them cancelled
    mid-flight: every caller that stays gets its own visitor's data, never a neighbour's."""
    prefix = _prefix()
    seeded = RedisStore.from_url(redis_server.url, prefix=prefix)
    for index in range(200):
        assert seeded.compare_and_set(f"v{index}", 0, f"data-{index}", 60)[0]
    seeded.close()
    chance = random.Random(7)

    async def scenario() -> list[tuple[int, str | None]]:
        store = RedisStore.from_url(redis_server.url, prefix=prefix)

        async def read(index: int) -> tuple[int, str | None]:
            loaded = await store.aload(f"v{index}")
            return index, None if loaded is None else loaded.data

        try:
            tasks = [asyncio.create_task(read(i)) for i in range(200)]
            await asyncio.sleep(0)  # every command is written; replies are on their way
            for task in tasks:
                if chance.random() < 1 / 3:
                    task.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            kept = [result for result in done if isinstance(result, tuple)]
            # ... and the connection still serves: one more round after the cancellations.
            kept += await asyncio.gather(*(read(i) for i in range(0, 200, 7)))
            return kept
        finally:
            await store.aclose()

    results = asyncio.run(scenario())
    assert len(results) > 200 // 7
    assert all(data == f"data-{index}" for index, data in results)


def test_a_store_serves_one_event_loop_after_another(redis_server: Any) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=_prefix())

    async def write_then_read(name: str) -> str | None:
        ok, _ = await store.acompare_and_set(name, 0, name, 60)
        assert ok
        loaded = await store.aload(name)
        await store.aclose()
        return None if loaded is None else loaded.data

    assert asyncio.run(write_then_read("first")) == "first"
    assert asyncio.run(write_then_read("second")) == "second"


# -- the blocking lane ------------------------------------------------------------
def _blocking_flow_on(url: str, issuer: TokenIssuer, prefix: str) -> tuple[Any, Any]:
    store = RedisStore.from_url(url, prefix=prefix, timeout=1.0)
    assert store._blocking_lane is not None
    tracker = ActivationTracker(defensive(), store)
    try:
        flow = new_flow()
        token = tracker.token_request("v", flow, partial(issuer.issue, "u"))
        return token, tracker.report("v", flow, callback(True, SECURED))
    finally:
        store.close()


def test_blocking_credentials_database_and_unix_socket(tmp_path: Path, issuer: TokenIssuer) -> None:
    path = tmp_path / "redis.sock"
    server = RedisServer(tmp_path, extra=["--unixsocket", str(path), "--unixsocketperm", "700"])
    server.start()
    try:
        admin = redis.Redis(port=server.port)
        admin.acl_setuser(
            "lane", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"]
        )
        prefix = _prefix()
        for url in (
            f"redis://lane:s3cret@127.0.0.1:{server.port}/4",
            f"unix://lane:s3cret@{path}?db=4",
        ):
            token, report = _blocking_flow_on(url, issuer, prefix)
            assert token.answer is Answer.TOKEN, url
            assert report.state is State.AUTHENTICATED, url
            admin.delete(prefix + "v")
        bad = RedisStore.from_url(f"redis://lane:wrong@127.0.0.1:{server.port}/4", timeout=0.5)
        with pytest.raises(StoreError, match="WRONGPASS") as caught:
            bad.load("v")
        assert "\n" not in str(caught.value)
        bad.close()
        admin.close()
    finally:
        server.stop()


def test_blocking_lane_survives_a_flushed_script_cache_and_killed_connections(
    redis_server: Any, issuer: TokenIssuer
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=_prefix())
    tracker = ActivationTracker(defensive(), store)
    raw = redis.Redis.from_url(redis_server.url)
    try:
        answers = []
        for index in range(4):
            raw.script_flush()
            raw.client_kill_filter(_type="normal", skipme=True)  # the lane's idle connections
            reply = tracker.token_request(f"v{index}", new_flow(), partial(issuer.issue, "u"))
            answers.append(reply.answer)
        assert answers == [Answer.TOKEN] * 4
    finally:
        raw.close()
        store.close()


def test_a_burst_beyond_the_connections_waits_for_one(redis_server: Any) -> None:
    """32 threads on a store of 2 connections: every call waits its turn, none fails."""
    store = RedisStore.from_url(redis_server.url, prefix=_prefix(), max_connections=2, timeout=2.0)
    failures: list[BaseException] = []
    start = threading.Barrier(32)

    def writer(index: int) -> None:
        start.wait()
        try:
            for round_ in range(20):
                ok, _ = store.compare_and_set(f"t{index}-{round_}", 0, "x", 60)
                assert ok
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert len(store._blocking_lane._idle) <= 2  # type: ignore[union-attr]
    store.close()


def test_a_forked_child_never_uses_its_parents_connections(redis_server: Any) -> None:
    """In a fresh single-threaded interpreter: parent and child each write through their own
    connections after the fork (a shared socket would interleave their replies)."""
    script = f"""
import os, sys
from statemachine.stores import RedisStore
store = RedisStore.from_url({redis_server.url!r}, prefix="fork-{os.urandom(4).hex()}:")
assert store.compare_and_set("before", 0, "parent", 60)[0]
pid = os.fork()
who = "child" if pid == 0 else "parent"
for index in range(200):
    ok, written = store.compare_and_set(f"{{who}}-{{index}}", 0, who, 60)
    assert ok and store.load(f"{{who}}-{{index}}") == written, (who, index)
if pid == 0:
    os._exit(0)
_, status = os.waitpid(pid, 0)
store.close()
sys.exit(os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_the_async_lane_checks_the_eviction_policy_once(
    own_redis: RedisServer, logs: list[dict[str, Any]]
) -> None:
    redis.Redis(port=own_redis.port).config_set("maxmemory-policy", "allkeys-lru")

    async def scenario() -> None:
        store = RedisStore.from_url(own_redis.url, prefix=_prefix())
        try:
            await store.aload("a")
            await store.acompare_and_set("b", 0, "{}", 60)
            await store.aload("b")
        finally:
            await store.aclose()
        assert store._async_client is None  # the check went through the lane: no redis-py pool

    asyncio.run(scenario())
    warnings = [e for e in logs if e["event"] == "activation.store_unsafe"]
    assert [w["maxmemory_policy"] for w in warnings] == ["allkeys-lru"]


def test_a_store_closed_while_a_call_waits_leaves_no_connection_open(
    own_redis: RedisServer,
) -> None:
    """aclose() while calls wait on a stalled Redis: each is answered (its data, or a
    StoreError: the store was closed under it), and none reopens a connection the closed store would never
    close again (it went on a lane the store no longer knows: one socket leaked per close)."""
    watcher = redis.Redis(port=own_redis.port, socket_timeout=10)
    assert own_redis.process is not None
    pid = own_redis.process.pid

    async def scenario() -> list[object]:
        store = RedisStore.from_url(own_redis.url, prefix=_prefix(), timeout=1.0)
        answers: list[object] = []
        for round_ in range(3):
            assert await store.aload("warm") is None  # this round's lane is connected
            os.kill(pid, signal.SIGSTOP)
            try:
                call = asyncio.create_task(store.aload(f"v{round_}"))
                await asyncio.sleep(0.1)  # the read is on the wire, waiting
                await store.aclose()
            finally:
                os.kill(pid, signal.SIGCONT)
            answers.append((await asyncio.gather(call, return_exceptions=True))[0])
        await asyncio.sleep(0.2)
        return answers

    answers = asyncio.run(scenario())
    assert all(answer is None or isinstance(answer, StoreError) for answer in answers), answers
    deadline = time.monotonic() + 5
    while len(watcher.client_list()) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(watcher.client_list()) == 1  # the watcher's own connection only
    watcher.close()

"""Redis as the distributed engine it is: a real Cluster and a real Sentinel group, and failovers.

Each test starts its own processes (``tests/redis_topologies.py``), kills a
master with SIGKILL under a bounded load, and counts: every failed token
request got the policy's answer, service came back within the node timeout
plus a few seconds, and no acknowledged visitor was lost.
"""

from __future__ import annotations

import asyncio
import gc
import io
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from statemachine import Answer, AsyncActivationTracker, State
from statemachine.protocol.options import SECURED
from statemachine.stores import RedisStore, StoreError
from statemachine.tokens import TokenIssuer
from statemachine.tools.cli import main as cli
from tests.helpers import defensive
from tests.redis_topologies import NODE_TIMEOUT_MS, LocalCluster, LocalSentinel, command
from tests.test_web_workers import Visitor
from tests.tracker_harness import callback
from tests.web_host import Host

RECOVERY_ALLOWANCE = NODE_TIMEOUT_MS / 1000 + 8.0
"""The node timeout, plus a few seconds for the election and the clients to follow."""

MAX_REQUESTS = 30_000
MAX_SECONDS = 40.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    started = LocalCluster(tmp_path / "cluster").start()
    yield started
    started.stop()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[LocalSentinel]:
    started = LocalSentinel(tmp_path / "sentinel").start()
    yield started
    started.stop()


class Measured(NamedTuple):
    acknowledged: list[str]  # visitors whose report came back authenticated
    failures: list[tuple[float, str]]  # (seconds after the kill, what the request got)
    wrong: list[str]  # failed requests that did not get the policy's answer
    last_failure: float  # seconds after the kill; 0 if none
    requests: int
    steady: bool  # the load ended because service had been steady for 3 s (not at a bound)


async def _load_with_a_kill(
    store: RedisStore, issuer: TokenIssuer, kill: Callable[[], None]
) -> Measured:
    """New visitors sign in and activate (token request, report) from 8 tasks; after 1 s a
    master is killed; the load runs on until service has been steady for 3 s (bounded)."""
    tracker = AsyncActivationTracker(defensive(), store)
    token = issuer.issue("user")  # one real token: the provider stays cheap under load

    async def provider() -> str:
        return token

    acknowledged: list[str] = []
    failures: list[tuple[float, str]] = []
    wrong: list[str] = []
    killed_at: list[float] = []
    started = time.monotonic()
    count = [0]

    def since_kill() -> float:
        return time.monotonic() - killed_at[0] if killed_at else -1.0

    def steady() -> bool:
        if not killed_at or since_kill() < 3.0:
            return False
        last = failures[-1][0] if failures else 0.0
        return since_kill() - last >= 3.0

    async def worker(name: int) -> None:
        while count[0] < MAX_REQUESTS and time.monotonic() - started < MAX_SECONDS:
            if steady():
                return
            count[0] += 1
            visitor, flow = f"w{name}-{count[0]}", f"flow-{name}-{count[0]}"
            reply = await tracker.token_request(visitor, flow, provider)
            if reply.answer is not Answer.TOKEN:
                failures.append((since_kill(), reply.answer.value))
                # The policy's answer for a store that cannot hold the visitor (defensive):
                if reply.answer is not Answer.DO_NOT_ACTIVATE or reply.state is not None:
                    wrong.append(repr(reply))
                continue
            try:
                report = await tracker.report(visitor, flow, callback(True, SECURED))
            except StoreError:
                failures.append((since_kill(), "report: store error"))
                continue
            if report.state is State.AUTHENTICATED:
                acknowledged.append(visitor)

    async def killer() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(kill)
        killed_at.append(time.monotonic())

    await asyncio.gather(killer(), *(worker(n) for n in range(8)))
    after = [at for at, _ in failures if at >= 0]
    return Measured(acknowledged, failures, wrong, max(after, default=0.0), count[0], steady())


async def _lost(store: RedisStore, visitors: list[str]) -> list[str]:
    tracker = AsyncActivationTracker(defensive(), store)
    lost = []
    for visitor in visitors:
        view = await tracker.view(visitor)
        if view is None or view.state is not State.AUTHENTICATED:
            lost.append(visitor)
    return lost


def _check(measured: Measured, lost: list[str], what: str) -> None:
    print(
        f"{what}: {measured.requests} requests, {len(measured.acknowledged)} visitors "
        f"acknowledged, {len(measured.failures)} failed, service back "
        f"{measured.last_failure:.2f} s after the kill, {len(lost)} acknowledged visitors lost"
    )
    assert measured.steady  # service came back while the load still ran
    assert measured.acknowledged
    assert measured.wrong == []
    assert measured.last_failure <= RECOVERY_ALLOWANCE
    assert lost == []


def test_a_cluster_master_killed_under_load(cluster: LocalCluster, issuer: TokenIssuer) -> None:
    async def scenario() -> tuple[Measured, list[str], Any]:
        store = RedisStore.from_url(cluster.url, prefix="failover:", timeout=0.3)
        victim = cluster.masters()[0]
        try:
            measured = await _load_with_a_kill(store, issuer, victim.kill)
            lost = await _lost(store, measured.acknowledged)
            listing = await store.alisting(100_000)
        finally:
            await store.aclose()
        return measured, lost, listing

    measured, lost, listing = asyncio.run(scenario())
    gc.collect()  # redis-py's abandoned connections go now, not inside a later import
    _check(measured, lost, "cluster")
    assert listing.skipped == ()  # the replica took over: every shard answers again
    assert set(measured.acknowledged) <= set(listing.keys)


def test_the_cluster_listing_skips_a_shard_that_is_down(cluster: LocalCluster) -> None:
    store = RedisStore.from_url(cluster.url, prefix="listing:", timeout=0.3)
    try:
        for index in range(30):
            assert store.compare_and_set(f"v{index}", 0, "{}", 60)[0]
        everyone = store.listing()
        assert (len(everyone.keys), everyone.skipped) == (30, ())
        victim = cluster.masters()[0]
        assert victim.process is not None
        victim.process.send_signal(signal.SIGSTOP)  # hung: it answers nothing
        try:
            partial = store.listing()
        finally:
            victim.process.send_signal(signal.SIGCONT)
        assert partial.skipped == (f"127.0.0.1:{victim.port}",)
        assert 0 < len(partial.keys) < 30  # the other shards' visitors, listed
    finally:
        store.close()


def test_serve_two_workers_on_the_cluster_over_http(redis_cluster: Any) -> None:
    host = Host("--workers", "2", "--redis", redis_cluster.url)
    try:
        visitors = [Visitor(host) for _ in range(12)]
        for index, visitor in enumerate(visitors):
            visitor.sign_in(f"user-{index}")
            status, answer = visitor.activate(f"flow-{index}")
            assert status == 200, answer
            assert answer["state"] == "authenticated"
        for visitor in visitors:
            assert visitor.state()["state"] == "authenticated"
        # A second tab of a visitor in flight is refused, across workers.
        late = Visitor(host)
        late.sign_in("user-late")
        first = late.call("POST", "/activation/token", {"flow": "tab-one"})
        assert first[0] == 200
        assert "authenticationOption" in first[1]
        second = late.call("POST", "/activation/token", {"flow": "tab-two"})
        assert second[0] == 409
    finally:
        host.stop()


def test_a_sentinel_master_killed_under_load(sentinel: LocalSentinel, issuer: TokenIssuer) -> None:
    async def scenario() -> tuple[Measured, list[str]]:
        store = RedisStore.from_url(sentinel.url, prefix="failover:", timeout=0.3)
        try:
            assert sentinel.master is not None
            measured = await _load_with_a_kill(store, issuer, sentinel.master.kill)
            lost = await _lost(store, measured.acknowledged)
        finally:
            await store.aclose()
        return measured, lost

    before = sentinel.master_port()
    measured, lost = asyncio.run(scenario())
    gc.collect()  # redis-py's abandoned connections go now, not inside a later import
    assert sentinel.master_port() != before  # the replica was promoted
    _check(measured, lost, "sentinel")


def test_check_store_on_a_safe_and_an_unsafe_redis(redis_cluster: Any, tmp_path: Path) -> None:
    from tests.redis_server import RedisServer

    out = io.StringIO()
    assert _run_cli(["check-store", redis_cluster.url], out) == 0
    assert "topology   cluster ok: 3 primaries, 3 replicas" in out.getvalue()
    server = RedisServer(tmp_path).start()
    try:
        command(server.port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
        out = io.StringIO()
        assert _run_cli(["check-store", server.url], out) == 0, out.getvalue()
        assert out.getvalue().splitlines()[-1] == "safe"
        command(server.port, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        out = io.StringIO()
        assert _run_cli(["check-store", server.url], out) == 1
        assert "FAIL eviction" in out.getvalue()
        assert out.getvalue().splitlines()[-1] == "unsafe: eviction"
    finally:
        server.stop()
    out = io.StringIO()
    assert _run_cli(["check-store", server.url, "--timeout", "0.2"], out) == 1
    assert out.getvalue().startswith("FAIL reachable")


def _run_cli(argv: list[str], out: io.StringIO) -> int:
    import contextlib

    with contextlib.redirect_stdout(out):
        return cli(argv)


@pytest.mark.parametrize(
    "url", ["redis+cluster://127.0.0.1:1", "redis+sentinel://127.0.0.1:1/mymaster"]
)
def test_check_store_reports_an_unreachable_cluster_or_sentinel_as_a_check(url: str) -> None:
    """A Cluster or Sentinel client connects as it is made: that, too, is the reachable check."""
    out = io.StringIO()
    assert _run_cli(["check-store", url, "--timeout", "0.2"], out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("FAIL reachable"), lines
    assert lines[-1] == "unsafe: reachable"

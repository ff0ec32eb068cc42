"""Clients a host builds and passes in, on a real Cluster and a real Sentinel group.

A URL is the common way in, but a host that already runs redis-py may hand the
store its own ``RedisCluster``, or a Sentinel's ``master_for`` client, blocking
or asyncio. The store then takes that client's topology and credentials and
runs on connections with its own timeouts (blocking), or under its own
deadline (asyncio). These tests walk new visitors through a token request and
a report on such clients, read every record back through a store of a URL of
its own (so the records are really where the topology keeps them), and check
that closing the store leaves the host's client open: it is the host's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel

from statemachine import ActivationTracker, Answer, AsyncActivationTracker, State
from statemachine.protocol.options import SECURED
from statemachine.stores import RedisStore
from statemachine.tokens import TokenIssuer
from tests.helpers import defensive
from tests.redis_topologies import LocalCluster, LocalSentinel, command
from tests.tracker_harness import callback, new_flow

VISITORS = 12  # enough that, on three masters, every master holds some
HOST = "host-app"  # the name the host's own connections carry (CLIENT SETNAME)


@pytest.fixture(scope="module")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    started = LocalSentinel(tmp_path_factory.mktemp("sentinel")).start()
    yield started
    started.stop()


def _prefix() -> str:
    return f"host-client:{os.urandom(4).hex()}:"


def _visit(store: RedisStore, issuer: TokenIssuer) -> list[str]:
    """New visitors sign in and activate on the blocking tracker; their ids."""
    tracker = ActivationTracker(defensive(), store)
    visitors = [f"visitor-{index}" for index in range(VISITORS)]
    for visitor in visitors:
        flow = new_flow()
        reply = tracker.token_request(visitor, flow, partial(issuer.issue, visitor))
        assert reply.answer is Answer.TOKEN, reply
        assert tracker.report(visitor, flow, callback(True, SECURED)).state is State.AUTHENTICATED
    return visitors


async def _avisit(store: RedisStore, issuer: TokenIssuer) -> list[str]:
    """The same on the asyncio tracker, the visitors concurrently."""
    tracker = AsyncActivationTracker(defensive(), store)

    async def provider(visitor: str) -> str:
        return issuer.issue(visitor)

    async def one(visitor: str) -> None:
        flow = new_flow()
        reply = await tracker.token_request(visitor, flow, partial(provider, visitor))
        assert reply.answer is Answer.TOKEN, reply
        report = await tracker.report(visitor, flow, callback(True, SECURED))
        assert report.state is State.AUTHENTICATED

    visitors = [f"visitor-{index}" for index in range(VISITORS)]
    await asyncio.gather(*(one(visitor) for visitor in visitors))
    return visitors


def _read_back(url: str, prefix: str, visitors: list[str]) -> None:
    """Every visitor is authenticated in a store of its own URL: the records are in Redis."""
    store = RedisStore.from_url(url, prefix=prefix)
    try:
        tracker = ActivationTracker(defensive(), store)
        for visitor in visitors:
            view = tracker.view(visitor)
            assert view is not None, visitor
            assert view.state is State.AUTHENTICATED, visitor
    finally:
        store.close()


def _host_connections(ports: list[int]) -> int:
    """How many connections named by the host the servers hold open now."""
    return sum(
        f" name={HOST} " in f" {line} "
        for port in ports
        for line in command(port, "CLIENT", "LIST").splitlines()
    )


def _walk(
    host_client: Any, kind: str, ports: list[int], issuer: TokenIssuer, prefix: str
) -> list[str]:
    """Visitors activate on a store over the host's blocking client; then the store closes,
    and the host's own connections (named ``HOST``) are still open on ``ports``."""
    store = RedisStore(client=host_client, prefix=prefix, timeout=2.0)
    assert store.kind == kind
    try:
        visitors = _visit(store, issuer)
    finally:
        store.close()
    assert _host_connections(ports) >= len(ports)
    return visitors


async def _awalk(
    host_client: Any, kind: str, ports: list[int], issuer: TokenIssuer, prefix: str
) -> list[str]:
    """``_walk`` on the asyncio face: the store uses the host's client as given."""
    store = RedisStore(async_client=host_client, prefix=prefix, timeout=2.0)
    assert store.kind == kind
    try:
        visitors = await _avisit(store, issuer)
    finally:
        await store.aclose()
    assert await asyncio.to_thread(_host_connections, ports) >= len(ports)
    return visitors


def _on_master(port: int, prefix: str, visitors: list[str]) -> None:
    """Each record is on the master the Sentinel names."""
    for visitor in visitors:
        assert command(port, "EXISTS", prefix + visitor).strip() == "1", visitor


def _masters_holding(cluster: LocalCluster, prefix: str, visitors: list[str]) -> set[int]:
    return {cluster.master_of(prefix + visitor).port for visitor in visitors}


def test_a_blocking_cluster_client_from_the_host(
    redis_cluster: LocalCluster, issuer: TokenIssuer
) -> None:
    ports = [node.port for node in redis_cluster.masters()]
    host_client = redis.cluster.RedisCluster(host="127.0.0.1", port=ports[0], client_name=HOST)
    prefix = _prefix()
    try:
        assert host_client.ping(target_nodes=redis.cluster.RedisCluster.ALL_NODES)
        visitors = _walk(host_client, "cluster", ports, issuer, prefix)
        for visitor in visitors:
            assert host_client.exists(prefix + visitor) == 1
    finally:
        host_client.close()
    assert len(_masters_holding(redis_cluster, prefix, visitors)) > 1  # really sharded
    _read_back(redis_cluster.url, prefix, visitors)


def test_an_asyncio_cluster_client_from_the_host(
    redis_cluster: LocalCluster, issuer: TokenIssuer
) -> None:
    ports = [node.port for node in redis_cluster.masters()]
    prefix = _prefix()

    async def scenario() -> list[str]:
        host_client = redis.asyncio.cluster.RedisCluster(
            host="127.0.0.1", port=ports[0], client_name=HOST
        )
        try:
            return await _awalk(host_client, "cluster", ports, issuer, prefix)
        finally:
            await host_client.aclose()

    visitors = asyncio.run(scenario())
    assert len(_masters_holding(redis_cluster, prefix, visitors)) > 1
    _read_back(redis_cluster.url, prefix, visitors)


def test_a_blocking_sentinel_client_from_the_host(
    sentinel_group: LocalSentinel, issuer: TokenIssuer
) -> None:
    assert sentinel_group.sentinel is not None
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", sentinel_group.sentinel.port)])
    host_client = sentinel.master_for(LocalSentinel.SERVICE, client_name=HOST)
    master = sentinel_group.master_port()
    prefix = _prefix()
    try:
        assert host_client.ping()
        visitors = _walk(host_client, "sentinel", [master], issuer, prefix)
    finally:
        host_client.close()
        for watcher in sentinel.sentinels:  # the host's Sentinel connections are its own
            watcher.close()
    _on_master(master, prefix, visitors)
    _read_back(sentinel_group.url, prefix, visitors)


def test_an_asyncio_sentinel_client_from_the_host(
    sentinel_group: LocalSentinel, issuer: TokenIssuer
) -> None:
    assert sentinel_group.sentinel is not None
    port = sentinel_group.sentinel.port
    master = sentinel_group.master_port()
    prefix = _prefix()

    async def scenario() -> list[str]:
        sentinel = redis.asyncio.sentinel.Sentinel([("127.0.0.1", port)])
        host_client = sentinel.master_for(LocalSentinel.SERVICE, client_name=HOST)
        try:
            return await _awalk(host_client, "sentinel", [master], issuer, prefix)
        finally:
            await host_client.aclose()
            for watcher in sentinel.sentinels:
                await watcher.aclose()

    visitors = asyncio.run(scenario())
    _on_master(master, prefix, visitors)
    _read_back(sentinel_group.url, prefix, visitors)

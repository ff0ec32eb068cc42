"""10. Store engines: token requests per second for new visitors on one Redis and on a Cluster.

The provider is cheap (an async callable returning a token minted beforehand),
so minting does not hide the store: what is measured is the tracker and its
round trips. 1 and 2 OS processes (asyncio tracker, 32 requests in flight
each) against a real ``redis-server`` and a real local 6-node Redis Cluster
(3 masters, 3 replicas), both started for the run on loopback ports; and,
in one process, where a request's time goes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import quiet_logs, us
from policies import DefensivePolicy
from statemachine import AsyncActivationTracker
from statemachine.stores import MemoryStore, RedisStore
from statemachine.tokens import TokenIssuer, generate_rsa
from tests.redis_server import RedisServer
from tests.redis_topologies import LocalCluster


def _token() -> str:
    return TokenIssuer(generate_rsa(), generate_rsa(), "https://brand.example").issue("visitor")


async def _burst(tracker: AsyncActivationTracker, name: str, visitors: int, token: str) -> float:
    async def provider() -> str:
        return token

    gate = asyncio.Semaphore(32)  # requests in flight per worker, as a server would have

    async def one(index: int) -> None:
        async with gate:
            await tracker.token_request(f"{name}{index}", f"flow{index}", provider)

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(visitors)))
    return time.perf_counter() - began


def _worker(url: str, prefix: str, name: str, visitors: int, start_at: float, queue: Any) -> None:
    quiet_logs()
    token = _token()

    async def run() -> float:
        store = RedisStore.from_url(url, prefix=prefix)
        tracker = AsyncActivationTracker(DefensivePolicy(), store)
        await tracker.token_request("warm" + name, "warm", lambda: token)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        elapsed = await _burst(tracker, name, visitors, token)
        await store.aclose()
        return elapsed

    queue.put(asyncio.run(run()))


def _rate(url: str, processes: int, visitors: int) -> float:
    """Token requests per second, all processes together (the slowest one's time)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    prefix = f"bench-stores:{os.urandom(4).hex()}:"
    start_at = time.time() + 3.0
    each = visitors // processes
    workers = [
        context.Process(target=_worker, args=(url, prefix, f"p{n}-", each, start_at, queue))
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    elapsed = [queue.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(60)
    return each * processes / max(elapsed)


def _breakdown(url: str, visitors: int) -> dict[str, float]:
    """One process, one request at a time: seconds per request, and the share in store calls."""
    token = _token()

    async def run() -> dict[str, float]:
        store = RedisStore.from_url(url, prefix=f"bench-time:{os.urandom(4).hex()}:")
        spent = [0.0]
        write = store.acompare_and_set
        read = store.aload

        async def timed_write(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await write(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        async def timed_read(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await read(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        store.acompare_and_set = timed_write  # type: ignore[method-assign]
        store.aload = timed_read  # type: ignore[method-assign]
        tracker = AsyncActivationTracker(DefensivePolicy(), store)

        async def provider() -> str:
            return token

        await tracker.token_request("warm", "warm", provider)
        spent[0] = 0.0
        began = time.perf_counter()
        for index in range(visitors):
            await tracker.token_request(f"v{index}", f"flow{index}", provider)
        total = (time.perf_counter() - began) / visitors
        client = store.async_client()
        ping_began = time.perf_counter()
        for _ in range(visitors):
            await client.ping()
        ping = (time.perf_counter() - ping_began) / visitors
        await store.aclose()
        return {"total": total, "store": spent[0] / visitors, "ping": ping}

    return asyncio.run(run())


def _memory(visitors: int) -> float:
    """The same request on the in-memory store: the tracker's own cost, no network."""
    token = _token()

    async def run() -> float:
        tracker = AsyncActivationTracker(DefensivePolicy(), MemoryStore())
        return await _burst(tracker, "m", visitors, token) / visitors

    return asyncio.run(run())


def run(quick: bool) -> dict[str, Any]:
    visitors = 400 if quick else 6_000
    result: dict[str, Any] = {"visitors": visitors}
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory) / "single")
        (Path(directory) / "single").mkdir()
        server.start()
        cluster = LocalCluster(Path(directory) / "cluster")
        try:
            cluster.start()
            for name, url in (("redis", server.url), ("cluster", cluster.url)):
                for processes in (1, 2):
                    result[f"{name}-{processes}"] = _rate(url, processes, visitors)
                result[f"{name}-time"] = _breakdown(url, max(50, visitors // 20))
            result["memory"] = _memory(max(200, visitors // 10))
        finally:
            cluster.stop()
            server.stop()
    return result


def report(r: dict[str, Any]) -> list[str]:
    single, cluster = r["redis-time"], r["cluster-time"]
    rows = []
    for name, label in (("redis", "one `redis-server`"), ("cluster", "Redis Cluster, 3+3 nodes")):
        one, two = r[f"{name}-1"], r[f"{name}-2"]
        rows.append(
            f"| {label} | {one:,.0f} /s | {two:,.0f} /s | {two / one:.2f}x | "
            f"{one / r['redis-1']:.2f}x |"
        )
    return [
        "## 10. Store engines",
        "",
        f"Token requests per second for {r['visitors']:,} new visitors (`AsyncActivationTracker`, "
        "32 requests in flight per process, an async provider returning a token minted "
        "beforehand, so minting does not hide the store), from `redis+cluster://` and "
        "`redis://` URLs, both on loopback.",
        "",
        "| store | 1 process | 2 processes | 2 / 1 | 1 process vs one Redis |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Where one request's time goes (one process, one request at a time):",
        "",
        "| store | per request | in store calls | of which network (2 x PING) | tracker's own |",
        "|---|---|---|---|---|",
        f"| one `redis-server` | {us(single['total'])} | {us(single['store'])} "
        f"({single['store'] / single['total']:.0%}) | {us(2 * single['ping'])} | "
        f"{us(single['total'] - single['store'])} |",
        f"| Redis Cluster | {us(cluster['total'])} | {us(cluster['store'])} "
        f"({cluster['store'] / cluster['total']:.0%}) | {us(2 * cluster['ping'])} | "
        f"{us(cluster['total'] - cluster['store'])} |",
        f"| `MemoryStore` (no network, 32 in flight) | {us(r['memory'])} | | | |",
        "",
        "A token request for a new visitor is two scripts (the claim, then its settlement), "
        "each reading Redis `TIME` and comparing a random write id; the rest of a request is "
        "the tracker's own work (rebuilding and dumping the visitor record, the machine's "
        'step). "In store calls" is the client\'s whole time in `aload`/`acompare_and_set` '
        "(redis-py encoding and parsing, the pool, the script), so it exceeds two bare PINGs. "
        "Throughput is bound by the Python side: a second process nearly doubles it. On the "
        "Cluster the server work is spread over three primaries, and its client keeps plain "
        "per-node connection lists, where one server's URL goes through a pool that waits "
        "(asyncio) for a free connection.",
        "",
    ]

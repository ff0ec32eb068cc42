"""5. Tracker on Redis: the token path against the same mint untracked, round trips per
event, and many visitors spread over two OS processes sharing one Redis.

A real ``redis-server`` is started on a free loopback port for the run.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import ms, per_call, quiet_logs, us
from policies import DefensivePolicy
from statemachine import ActivationTracker, AsyncActivationTracker
from statemachine.protocol.options import SECURED
from statemachine.stores import MemoryStore, RedisStore
from statemachine.tokens import TokenIssuer, generate_rsa
from tests.redis_server import RedisServer, commands_sent


def _issuer() -> TokenIssuer:
    return TokenIssuer(generate_rsa(), generate_rsa(), "https://brand.example")


def _round_trips(store: RedisStore, tracker: ActivationTracker, mint: Any) -> dict[str, int]:
    counts = {}
    flow = "f" + os.urandom(8).hex()
    done = {"authentication": {"option": {"type": SECURED}, "status": "authentication-success"}}
    for name, action in (
        ("token request, new visitor", lambda: tracker.token_request("rt", flow, mint)),
        ("token request, the tag's retry", lambda: tracker.token_request("rt", flow, mint)),
        ("report", lambda: tracker.report("rt", flow, done)),
        ("token request, refresh", lambda: tracker.token_request("rt", "g" + flow, mint)),
        ("logout", lambda: tracker.logout("rt")),
    ):
        with commands_sent(store) as sent:
            action()
        counts[name] = len(sent)
    return counts


def _interleaved(
    url: str, mint: Any, tracked: Any, ping: Any, number: int, repeats: int
) -> dict[str, float]:
    """The mint, both trackers and a PING in alternating batches: drift on a shared machine
    (other processes' load comes and goes) hits every row alike; medians per row."""

    async def provider() -> str:
        return str(mint())

    samples: dict[str, list[float]] = {
        "mint": [],
        "tracked": [],
        "tracked_async": [],
        "rtt": [],
        "sequence": [],
        "spin": [],
        "busy_sequence": [],
        "tracked_memory": [],
        "lane_read": [],
    }

    def sequence() -> None:  # what a token request physically needs, in the order it needs it
        mint()
        ping()
        ping()

    # The same sequence with the mint replaced by a busy loop as long as a mint: whether two
    # round trips cost more after the mint because of the mint, or after any stretch of work.
    spin_for = per_call(mint, max(number // 4, 5), 1)

    def spin() -> None:
        until = time.perf_counter() + spin_for
        while time.perf_counter() < until:
            pass

    def busy_sequence() -> None:
        spin()
        ping()
        ping()

    with asyncio.Runner() as runner:
        tracker = AsyncActivationTracker(
            DefensivePolicy(), RedisStore.from_url(url, prefix="bench-async:")
        )
        in_memory = AsyncActivationTracker(DefensivePolicy(), MemoryStore())
        runner.run(tracker.token_request("warm", "warm", provider))
        counter = [0]

        async def batch(on: AsyncActivationTracker) -> float:
            started = time.perf_counter()
            for _ in range(number):
                counter[0] += 1
                index = counter[0]
                await on.token_request(f"v{index}", f"flow{index}", provider)
            return (time.perf_counter() - started) / number

        async def reads() -> float:
            store = tracker.store
            started = time.perf_counter()
            for _ in range(number * 5):
                await store.aload("absent")
            return (time.perf_counter() - started) / (number * 5)

        for _ in range(repeats):
            samples["mint"].append(per_call(mint, number, 1))
            samples["tracked"].append(per_call(tracked, number, 1))
            samples["tracked_async"].append(runner.run(batch(tracker)))
            samples["rtt"].append(per_call(ping, number * 5, 1))
            samples["sequence"].append(per_call(sequence, number, 1))
            samples["spin"].append(per_call(spin, number, 1))
            samples["busy_sequence"].append(per_call(busy_sequence, number, 1))
            samples["tracked_memory"].append(runner.run(batch(in_memory)))
            samples["lane_read"].append(runner.run(reads()))
        runner.run(tracker.store.aclose())
    return {name: statistics.median(values) for name, values in samples.items()}


def _logging_cost(url: str, number: int, repeats: int) -> dict[str, float]:
    """CPU per async token request (a constant token) under three log configurations, in turn.

    The command line's default (WARNING: info filtered out), no log listener at
    all, and structlog's defaults (every transition rendered, here to /dev/null),
    which is what worker processes ran on before they got the command line's.
    """
    import structlog

    from statemachine.signals import logs
    from statemachine.signals.events import log_transition

    def cli() -> None:
        logs.configure_for_cli(verbose=False, json=False)

    async def provider() -> str:
        return "constant-token"

    async def run(sink: Any) -> dict[str, float]:
        def defaults() -> None:
            structlog.reset_defaults()
            structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sink))

        setups = {"warning": cli, "none": cli, "defaults": defaults}
        trackers = {}
        for name in setups:
            trackers[name] = AsyncActivationTracker(
                DefensivePolicy(), RedisStore.from_url(url, prefix=f"bench-log-{name}:")
            )
            if name == "none":
                trackers[name].remove_listener(log_transition)
            await trackers[name].token_request("warm", "warm", provider)
        samples: dict[str, list[float]] = {name: [] for name in setups}
        counter = 0
        for _ in range(repeats):
            for name, setup in setups.items():
                setup()
                started = time.thread_time()
                for _ in range(number):
                    counter += 1
                    await trackers[name].token_request(f"v{counter}", f"f{counter}", provider)
                samples[name].append((time.thread_time() - started) / number)
        for tracker in trackers.values():
            await tracker.store.aclose()
        return {name: statistics.median(values) for name, values in samples.items()}

    try:
        with open(os.devnull, "w", encoding="utf-8") as sink:
            return asyncio.run(run(sink))
    finally:
        quiet_logs()


def _in_process(number: int, repeats: int) -> dict[str, float]:
    """The tracker's own Python: CPU per request on ``MemoryStore`` (no network, no mint).

    A new visitor's token request for each face (a constant token; the blocking
    face's provider runs on a pooled worker, as its timeout asks), then the
    report that ends each flow and a later token request (a refresh), in turn
    per batch; CPU of this thread (the blocking face: of the process, so the
    worker's share counts). structlog at WARNING, as everywhere here.
    """
    from statemachine.stores import MemoryStore

    async def provider() -> str:
        return "constant-token"

    def plain() -> str:
        return "constant-token"

    done = {"authentication": {"option": {"type": SECURED}, "status": "authentication-success"}}
    samples: dict[str, list[float]] = {"async": [], "blocking": [], "report": [], "refresh": []}
    blocking = ActivationTracker(DefensivePolicy(), MemoryStore())
    counter = 0

    async def run() -> None:
        nonlocal counter
        tracker = AsyncActivationTracker(DefensivePolicy(), MemoryStore())
        for batch in range(repeats + 1):  # the first batch warms up
            visitors = [f"v{counter + i}" for i in range(number)]
            counter += number
            started = time.thread_time()
            for visitor in visitors:
                await tracker.token_request(visitor, "f" + visitor, provider)
            token = time.thread_time() - started
            started = time.process_time()
            for visitor in visitors:
                blocking.token_request(visitor, "f" + visitor, plain)
            plain_token = time.process_time() - started
            started = time.thread_time()
            for visitor in visitors:
                await tracker.report(visitor, "f" + visitor, done)
            report = time.thread_time() - started
            started = time.thread_time()
            for visitor in visitors:
                await tracker.token_request(visitor, "g" + visitor, provider)
            refresh = time.thread_time() - started
            if batch:
                for name, spent in zip(samples, (token, plain_token, report, refresh), strict=True):
                    samples[name].append(spent / number)

    asyncio.run(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def _worker(url: str, prefix: str, name: str, visitors: int, start_at: float, queue: Any) -> None:
    quiet_logs()
    issuer = _issuer()
    mint = partial(issuer.issue, "visitor")

    async def run() -> tuple[list[float], float]:
        tracker = AsyncActivationTracker(DefensivePolicy(), RedisStore.from_url(url, prefix=prefix))
        latencies: list[float] = []
        gate = asyncio.Semaphore(32)  # requests in flight per worker, as a server would have

        async def one(index: int) -> None:
            async with gate:
                started = time.perf_counter()
                await tracker.token_request(f"{name}{index}", f"flow{index}", mint)
                latencies.append(time.perf_counter() - started)

        await asyncio.sleep(max(0.0, start_at - time.time()))
        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(visitors)))
        elapsed = time.perf_counter() - began
        await tracker.store.aclose()
        return latencies, elapsed

    queue.put(asyncio.run(run()))


def _spread(url: str, visitors: int) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    prefix = f"bench:{os.urandom(4).hex()}:"
    start_at = time.time() + 3.0
    half = visitors // 2
    workers = [
        context.Process(target=_worker, args=(url, prefix, name, half, start_at, queue))
        for name in ("a", "b")
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(60)
    latencies = sorted(x for lat, _ in results for x in lat)
    elapsed = max(e for _, e in results)
    return {
        "visitors": float(len(latencies)),
        "throughput": len(latencies) / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
    }


def run(quick: bool) -> dict[str, Any]:
    number, repeats = (20, 3) if quick else (200, 5)
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory)).start()
        try:
            issuer = _issuer()
            mint = partial(issuer.issue, "visitor")
            store = RedisStore.from_url(server.url, prefix="bench:")
            tracker = ActivationTracker(DefensivePolicy(), store)
            counter = iter(range(10**9))

            def tracked() -> None:
                index = next(counter)
                tracker.token_request(f"v{index}", f"flow{index}", mint)

            tracked()  # loads the script
            client = store.client()

            def ping() -> None:
                client.ping()

            result: dict[str, Any] = _interleaved(
                server.url, mint, tracked, ping, number, repeats * 2
            )
            result.update(
                {
                    "round_trips": _round_trips(store, tracker, mint),
                    "logging": _logging_cost(server.url, number, repeats),
                    "in_process": _in_process(number * 2, repeats),
                    "spread": _spread(server.url, 400 if quick else 10_000),
                }
            )
            store.close()
            return result
        finally:
            server.stop()


def _logging_lines(m: dict[str, float] | None) -> list[str]:
    if m is None:
        return []
    return [
        "What logging costs a token request (`AsyncActivationTracker`, a constant token, CPU "
        "time of the loop's thread, the three in turn):",
        "",
        "| log configuration | CPU per token request | against no log listener |",
        "|---|---|---|",
        f"| no log listener | {us(m['none'])} | |",
        f"| the command line's default (WARNING; what `serve` and `run` workers now get) | "
        f"{us(m['warning'])} | {us(m['warning'] - m['none'])} |",
        f"| structlog's defaults (two info lines rendered; what workers ran on before) | "
        f"{us(m['defaults'])} | {us(m['defaults'] - m['none'])} |",
        "",
    ]


def _in_process_lines(m: dict[str, float] | None) -> list[str]:
    if m is None:
        return []
    return [
        f"The tracker's own Python, on `MemoryStore` (no network, no mint; CPU per request): "
        f"a new visitor's token request {us(m['async'])} (async), {us(m['blocking'])} "
        f"(blocking, its provider on a pooled worker); the report {us(m['report'])}; "
        f"a refresh {us(m['refresh'])}.",
        "",
    ]


def report(r: dict[str, Any]) -> list[str]:
    ratio = r["tracked"] / r["mint"]
    ratio_async = r["tracked_async"] / r["mint"]
    floor = (r["mint"] + 2 * r["rtt"]) / r["mint"]
    spread = r["spread"]
    trips = "\n".join(f"| {name} | {count} |" for name, count in r["round_trips"].items())
    return [
        "## 5. Tracker on Redis",
        "",
        "A token request through `ActivationTracker` on a real `redis-server` (loopback), "
        "for a new visitor each time, against the same `TokenIssuer.issue` with no tracking. "
        "Target ≤ 1.3x.",
        "",
        "| path | median | ratio |",
        "|---|---|---|",
        f"| mint only | {us(r['mint'])} | 1.00x |",
        f"| tracked, `ActivationTracker` (plain provider on a worker thread) | "
        f"{us(r['tracked'])} | **{ratio:.2f}x** ({'met' if ratio <= 1.3 else 'MISSED'}) |",
        f"| tracked, `AsyncActivationTracker` (async provider) | {us(r['tracked_async'])} | "
        f"**{ratio_async:.2f}x** ({'met' if ratio_async <= 1.3 else 'MISSED'}) |",
        f"| one Redis round trip (`PING`, same client) | {us(r['rtt'])} | |",
        *(
            [
                f"| the floor as one sequence: mint, then two `PING`s, in one loop | "
                f"{us(r['sequence'])} | {r['sequence'] / r['mint']:.2f}x |",
                *(
                    [
                        f"| the same with a busy loop as long as a mint in its place: the loop "
                        f"{us(r['spin'])}, the two `PING`s after it "
                        f"{us(r['busy_sequence'] - r['spin'])} | {us(r['busy_sequence'])} | |"
                    ]
                    if "busy_sequence" in r
                    else []
                ),
                f"| tracked, `AsyncActivationTracker` on `MemoryStore` (the mint and the "
                f"tracker's own Python, no network) | {us(r['tracked_memory'])} | "
                f"{r['tracked_memory'] / r['mint']:.2f}x |",
                f"| one read script through the asyncio lane (`aload`: `TIME` + `HMGET`) | "
                f"{us(r['lane_read'])} | |",
            ]
            if "sequence" in r
            else []
        ),
        "",
        f"The two round trips a token request needs (the claim before the mint, then its "
        f"settlement) set a floor of mint + 2 x PING = **{floor:.2f}x** on this machine; "
        f"what the tracker adds beyond the network is "
        f"{us(r['tracked_async'] - r['mint'] - 2 * r['rtt'])} (async) and "
        f"{us(r['tracked'] - r['mint'] - 2 * r['rtt'])} (blocking, including the hand-off to "
        "a worker thread that enforces the provider's timeout).",
        "",
        *_logging_lines(r.get("logging")),
        *_in_process_lines(r.get("in_process")),
        "Redis round trips per event (target ≤ 2 per token request):",
        "",
        "| event | round trips |",
        "|---|---|",
        trips,
        "",
        f"{int(spread['visitors']):,} visitors spread over 2 OS processes (asyncio tracker, 32 "
        f"requests in flight each) against one Redis: **{spread['throughput']:,.0f} token "
        f"requests/s**, p50 {ms(spread['p50'])}, p99 {ms(spread['p99'])} (each includes its "
        "mint: RSA signing and encryption on a 2-core machine).",
        "",
    ]

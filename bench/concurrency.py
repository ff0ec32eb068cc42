"""2. Throughput under concurrency: many async sessions at once; threads on the blocking one."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import median_of, ms
from policies import DefensivePolicy, RetryPolicy
from statemachine import (
    ActivationError,
    ActivationSession,
    AsyncActivationSession,
    AuthenticationOption,
    FailureReason,
)

LATENCY = 0.020


class SlowPlatform:
    def __init__(self, latency: float) -> None:
        self.latency = latency

    async def activate(self, _option: AuthenticationOption) -> None:
        # With no latency it still answers on the next loop turn: an activator that never
        # waits takes a shorter path (no timer is armed for it), which would make the CPU
        # baseline cheaper than the flows it is the baseline of.
        await asyncio.sleep(self.latency)


async def provider() -> str:
    return "token"


def flows(count: int, latency: float) -> float:
    async def go() -> float:
        activator = SlowPlatform(latency)
        sessions = [
            AsyncActivationSession(provider, activator, DefensivePolicy()) for _ in range(count)
        ]
        started = time.perf_counter()
        results = await asyncio.gather(*(s.activate() for s in sessions))
        elapsed = time.perf_counter() - started
        assert all(r.succeeded for r in results)
        return elapsed

    return asyncio.run(go())


class Scripted:
    """Session ``i`` sees ``i % 5`` server errors before success: results depend on ``i`` only."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def activate(self, option: AuthenticationOption) -> None:
        if option.is_secured and self.failures:
            self.failures -= 1
            raise ActivationError(FailureReason.SERVER_ERROR)


POLICY = DefensivePolicy(
    retry=RetryPolicy(base_delay=0, max_delay=0, jitter=0),
    token_timeout=None,
    activation_timeout=None,
)


def one(i: int) -> tuple[str, str | None, int]:
    result = ActivationSession(lambda: f"token-{i}", Scripted(i % 5), POLICY).activate()
    return result.state.value, result.reason.name if result.reason else None, result.attempts


def threads_agree(count: int) -> tuple[bool, float, float]:
    started = time.perf_counter()
    sequential = [one(i) for i in range(count)]
    seq_time = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        threaded = list(pool.map(one, range(count)))
    return sequential == threaded, seq_time, time.perf_counter() - started


def shared_session_under_threads(threads: int = 16) -> dict[str, int]:
    """16 threads hammering one session: exactly one flow runs, the rest are refused."""
    import threading

    gate = threading.Event()

    class Gated:
        calls = 0

        def activate(self, _option: AuthenticationOption) -> None:
            Gated.calls += 1
            gate.wait(5)

    session = ActivationSession(lambda: "t", Gated(), POLICY)
    barrier = threading.Barrier(threads)
    reasons: list[Any] = []

    def hit() -> None:
        barrier.wait()
        reasons.append(session.activate().reason)

    workers = [threading.Thread(target=hit) for _ in range(threads)]
    for w in workers:
        w.start()
    while len(reasons) < threads - 1:
        time.sleep(0.001)
    gate.set()
    for w in workers:
        w.join()
    return {"activator_calls": Gated.calls, "refused": reasons.count(FailureReason.LOGIN_ONGOING)}


def run(quick: bool) -> dict[str, Any]:
    count = 1000 if quick else 10_000
    repeats = 1 if quick else 5
    cpu = median_of(lambda: flows(count, 0.0), repeats)
    wall = median_of(lambda: flows(count, LATENCY), repeats)
    agree, seq_time, thr_time = threads_agree(300 if quick else 3000)
    return {
        "count": count,
        "cpu": cpu,
        "wall": wall,
        "bound": 1.5 * (LATENCY + cpu),
        "agree": agree,
        "seq_time": seq_time,
        "thr_time": thr_time,
        "threads_count": 300 if quick else 3000,
        "shared": shared_session_under_threads(),
    }


def report(r: dict[str, Any]) -> list[str]:
    verdict = "met" if r["wall"] <= r["bound"] else "MISSED"
    return [
        "## 2. Throughput under concurrency",
        "",
        f"{r['count']:,} async sessions activating at once against an activator with "
        f"{ms(LATENCY)} latency (default policy, timeouts on).",
        "",
        "| what | median wall time |",
        "|---|---|",
        f"| CPU cost of {r['count']:,} flows (the activator answers on the next loop turn) | "
        f"{ms(r['cpu'])} |",
        f"| {r['count']:,} flows with {ms(LATENCY)} latency | {ms(r['wall'])} |",
        f"| target: 1.5 x (latency + CPU cost) | {ms(r['bound'])} — **{verdict}** "
        f"({r['wall'] / (LATENCY + r['cpu']):.2f} x (latency + CPU)) |",
        "",
        f"Blocking session, 16 threads vs sequential over {r['threads_count']:,} scripted "
        f"visitors: results identical: **{r['agree']}** (sequential {ms(r['seq_time'])}, "
        f"threaded {ms(r['thr_time'])}). Sixteen threads on *one* session: "
        f"{r['shared']['activator_calls']} activation reached the activator, "
        f"{r['shared']['refused']} were refused `LOGIN_ONGOING`.",
        "",
    ]

"""A slow host callable fails no one else: hung calls stop counting, each callable has its budget.

Real threads, a real tracker, real tokens (minted before the burst, so that
the burst measures the pool, not RSA on a busy machine).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from policies import DefensivePolicy, RetryPolicy
from statemachine import Answer, AsyncActivationTracker, FailureReason
from statemachine.hostcalls.workers import WorkerPool, WorkersExhausted, callable_key
from statemachine.stores import MemoryStore
from statemachine.tokens import TokenIssuer

FAST = RetryPolicy(max_retries=0, base_delay=0.0, max_delay=0.0, jitter=0.0)
SLOW_CALLS = 16
INSTANT_CALLS = 200


def test_a_burst_of_slow_calls_fails_no_instant_flow(issuer: TokenIssuer) -> None:
    """16 provider calls hanging 1 s (timeout 0.1 s) beside 200 instant ones, on a 16-worker pool."""
    pool = WorkerPool(16)
    policy = DefensivePolicy(retry=FAST, token_timeout=0.1, activation_timeout=1.0)
    tracker = AsyncActivationTracker(policy, MemoryStore(), workers=pool)
    tokens = [issuer.issue(f"user-{i}") for i in range(INSTANT_CALLS)]
    release = threading.Event()
    threads_seen = [0]

    def slow_backend() -> str:
        release.wait(1.0)
        return tokens[0]

    def instant_backend(index: int) -> str:
        threads_seen[0] = max(threads_seen[0], pool.workers)
        return tokens[index]

    async def scenario() -> list[Any]:
        slow = [
            tracker.token_request(f"slow-{i}", f"flow-slow-{i}", slow_backend)
            for i in range(SLOW_CALLS)
        ]
        instant = [
            tracker.token_request(f"fast-{i}", f"flow-fast-{i}", lambda i=i: instant_backend(i))
            for i in range(INSTANT_CALLS)
        ]
        replies = await asyncio.gather(*slow, *instant)
        return list(replies[SLOW_CALLS:])

    try:
        replies = asyncio.run(scenario())
    finally:
        release.set()
    authenticated = sum(reply.answer is Answer.TOKEN for reply in replies)
    assert authenticated >= 0.95 * INSTANT_CALLS, [r.reason for r in replies][:10]
    assert threads_seen[0] <= pool.max_threads
    assert pool.workers <= pool.max_threads


def test_a_spent_callable_is_refused_alone_and_others_still_run() -> None:
    pool = WorkerPool(2, max_hung_per_callable=2, max_threads=6)
    release = threading.Event()

    def hangs() -> str:
        release.wait(10)
        return "late"

    def instant() -> str:
        return "now"

    try:
        hung = [pool.submit(hangs) for _ in range(2)]
        for job in hung:
            assert job is not None
        deadline = time.monotonic() + 5
        while any(job is not None and job.started_at is None for job in hung):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for job in hung:
            assert job is not None
            pool.abandon(job)
        assert pool.hung == 2
        assert pool.submit(hangs) is None  # its budget is spent: refused at once
        job = pool.submit(instant)  # another callable: a replacement thread takes it
        assert job is not None
        assert job.future.result(5) == "now"
        assert pool.workers <= pool.max_threads
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while pool.hung and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.hung == 0
    again = pool.submit(hangs)  # service resumes by itself
    assert again is not None
    assert again.future.result(5) == "late"


def test_queued_calls_of_a_spent_callable_are_refused_and_the_others_run() -> None:
    pool = WorkerPool(1, max_hung_per_callable=1, max_threads=2)
    release = threading.Event()

    def hangs() -> str:
        release.wait(10)
        return "late"

    def other() -> str:
        return "ok"

    try:
        first = pool.submit(hangs)
        assert first is not None
        while first.started_at is None:
            time.sleep(0.01)
        queued_same = pool.submit(hangs)
        queued_other = pool.submit(other)
        assert queued_same is not None
        assert queued_other is not None
        pool.abandon(first)  # hung: its callable's budget is spent, a replacement starts
        with pytest.raises(WorkersExhausted):
            queued_same.future.result(5)
        assert queued_other.future.result(5) == "ok"
        # At the hard cap with every thread hung, nothing can run: every call is refused.
        second = pool.submit(lambda: release.wait(10))
        assert second is not None
        while second.started_at is None:
            time.sleep(0.01)
        pool.abandon(second)
        assert pool.workers == pool.max_threads == pool.hung
        assert pool.submit(other) is None
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while pool.hung and time.monotonic() < deadline:
        time.sleep(0.01)
    job = pool.submit(other)
    assert job is not None
    assert job.future.result(5) == "ok"


def test_workers_exhausted_reaches_the_flow_as_its_reason(issuer: TokenIssuer) -> None:
    pool = WorkerPool(1, max_hung_per_callable=1, max_threads=2)
    policy = DefensivePolicy(retry=FAST, token_timeout=0.05, activation_timeout=1.0)
    tracker = AsyncActivationTracker(policy, MemoryStore(), workers=pool)
    release = threading.Event()

    def hangs() -> str:
        release.wait(10)
        return "late"

    async def scenario() -> tuple[Any, Any, Any]:
        first = await tracker.token_request("a", "flow-a", hangs)
        second = await tracker.token_request("b", "flow-b", hangs)
        third = await tracker.token_request("c", "flow-c", lambda: issuer.issue("c"))
        return first, second, third

    try:
        first, second, third = asyncio.run(scenario())
    finally:
        release.set()
    assert first.reason is FailureReason.TOKEN_UNAVAILABLE
    assert second.reason is FailureReason.WORKERS_EXHAUSTED
    assert third.answer is Answer.TOKEN


def test_one_callable_is_its_code() -> None:
    def make(n: int) -> Any:
        return lambda: n

    assert callable_key(make(1)) == callable_key(make(2))  # closures per request: one callable
    assert callable_key(make(1)) != callable_key(lambda: 0)

    class Provider:
        def __call__(self) -> str:
            return "t"

        def method(self) -> str:
            return "t"

    assert callable_key(Provider()) == callable_key(Provider())
    assert callable_key(Provider().method) == callable_key(Provider().method)


def test_pool_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="max_threads"):
        WorkerPool(8, max_threads=4)
    with pytest.raises(ValueError, match="max_hung_per_callable"):
        WorkerPool(8, max_hung_per_callable=0)
    pool = WorkerPool(8)
    assert pool.max_threads == 32
    assert pool.max_hung_per_callable == 4

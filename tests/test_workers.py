"""Host calls that hang or crowd: bounded threads, no starved loop, no congestion blamed on the host.

Each test reproduces one way host code can crowd or hang a flow, against the
real sessions, with a pool small enough to fill quickly.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import pytest

from policies import DefensivePolicy, RetryPolicy
from statemachine import (
    ActivationSession,
    AsyncActivationSession,
    AuthenticationOption,
    FailureReason,
    State,
)
from statemachine.hostcalls.workers import WorkerPool

FAST = RetryPolicy(max_retries=0, base_delay=0.0, max_delay=0.0, jitter=0.0)


GENEROUS = 10.0
"""Seconds for a call that returns at once: on a loaded machine even that can take a while."""


def policy(timeout: float = 0.05, *, token_timeout: float = GENEROUS) -> DefensivePolicy:
    """``timeout`` for the activator (the one that hangs here); the instant provider's is generous,
    so a flow's reason is about the activator, never a provider call that was merely slow."""
    return DefensivePolicy(retry=FAST, token_timeout=token_timeout, activation_timeout=timeout)


class Hanging:
    """A plain activator that hangs until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def activate(self, option: AuthenticationOption) -> None:
        self.calls += 1
        self.release.wait(30)


class Instant:
    def activate(self, option: AuthenticationOption) -> None:
        return None


def provider() -> str:
    return "token"


def test_async_hung_plain_activator_leaves_the_default_executor_alone() -> None:
    """200 flows on a hanging plain activator must not starve to_thread or DNS."""
    pool = WorkerPool(8)
    hanging = Hanging()

    async def scenario() -> None:
        sessions = [
            AsyncActivationSession(provider, hanging, policy(), workers=pool) for _ in range(200)
        ]
        results = await asyncio.gather(*(s.activate() for s in sessions))
        assert {r.state for r in results} == {State.BLOCKED}
        reasons = {r.reason for r in results}
        assert reasons <= {FailureReason.ACTIVATION_TIMEOUT, FailureReason.WORKERS_EXHAUSTED}
        assert pool.workers <= pool.max_threads  # bounded, however many calls hang
        # The application's own executor and DNS still work.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 5) == 42
        await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo("localhost", 80), 5)
        # The hung callable's budget is spent: a new flow on it gets a typed answer at once
        # (long before the timeout it would otherwise wait out), and its callback once.
        calls: list[Any] = []
        started = time.monotonic()
        result = await AsyncActivationSession(
            provider, hanging, policy(timeout=60.0), workers=pool
        ).activate(callback=calls.append)
        assert time.monotonic() - started < 30.0
        assert result.reason is FailureReason.WORKERS_EXHAUSTED
        assert calls == [result]
        # Another callable is not refused: hung threads no longer count as live workers.
        other = await AsyncActivationSession(
            provider, Instant(), policy(GENEROUS), workers=pool
        ).activate()
        assert other.state is State.AUTHENTICATED
        # The hung calls return: the library recovers by itself.
        hanging.release.set()
        deadline = time.monotonic() + 5
        while pool.hung and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        again = await AsyncActivationSession(
            provider, Instant(), policy(GENEROUS), workers=pool
        ).activate()
        assert again.state is State.AUTHENTICATED

    started = time.monotonic()
    asyncio.run(scenario())  # returns: nothing of ours keeps the loop from closing
    assert time.monotonic() - started < 20


def test_queue_time_is_not_counted_as_the_hosts_time() -> None:
    """Calls that waited for a worker longer than their timeout still get all of it.

    Every worker is held by another callable while the flows queue for longer than their
    timeout: a pool that counted queue time would time them all out. Their own time (an
    instant call) stays far below a generous timeout, however loaded the machine.
    """
    pool = WorkerPool(4)
    gate = threading.Event()
    held = [pool.submit(gate.wait, 30) for _ in range(pool.max_workers)]
    assert all(job is not None for job in held)
    timeout = 3.0

    async def scenario() -> list[Any]:
        sessions = [
            AsyncActivationSession(
                provider, Instant(), policy(timeout, token_timeout=timeout), workers=pool
            )
            for _ in range(500)
        ]
        flows = asyncio.gather(*(s.activate() for s in sessions))
        await asyncio.sleep(timeout + 1.0)  # every flow's first call has queued this long
        assert not flows.done()  # nothing ran: every worker is still held
        gate.set()
        return await flows

    results = asyncio.run(scenario())
    assert {r.state for r in results} == {State.AUTHENTICATED}
    assert all(job is not None and job.future.result(5) for job in held)
    assert pool.workers <= 4  # nothing hung: only live workers


def test_blocking_session_reuses_a_bounded_set_of_threads() -> None:
    """2,000 activations against a hanging activator: bounded threads, typed answers."""
    pool = WorkerPool(8)
    hanging = Hanging()
    before = threading.active_count()
    reasons = set()
    for _ in range(2_000):
        calls: list[Any] = []
        result = ActivationSession(provider, hanging, policy(0.01), workers=pool).activate(
            callback=calls.append
        )
        assert calls == [result]
        reasons.add(result.reason)
    assert reasons <= {FailureReason.ACTIVATION_TIMEOUT, FailureReason.WORKERS_EXHAUSTED}
    assert FailureReason.WORKERS_EXHAUSTED in reasons
    assert threading.active_count() - before <= pool.max_threads
    assert pool.hung < pool.max_hung_per_callable + pool.max_workers
    hanging.release.set()
    deadline = time.monotonic() + 5
    while pool.hung and time.monotonic() < deadline:
        time.sleep(0.01)
    healthy = ActivationSession(provider, Instant(), policy(GENEROUS), workers=pool).activate()
    assert healthy.state is State.AUTHENTICATED


def test_workers_exhausted_is_never_retried_and_says_so() -> None:
    assert FailureReason.WORKERS_EXHAUSTED.message == "Every worker for host calls is busy"
    with pytest.raises(Exception, match="retry_on"):
        RetryPolicy(retry_on=["WORKERS_EXHAUSTED"])


def test_pool_refuses_bad_sizes() -> None:
    for bad in (0, -1, 1.5, "8", 10**6):
        with pytest.raises(ValueError, match="max_workers"):
            WorkerPool(bad)  # type: ignore[arg-type]


def test_idle_workers_exit() -> None:
    pool = WorkerPool(4, idle_timeout=0.05)
    job = pool.submit(lambda: 1)
    assert job is not None
    assert job.future.result(5) == 1
    deadline = time.monotonic() + 5
    while pool.workers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.workers == 0


# -- cancellation races -----------------------------------------------------------
def test_async_cancel_twice_still_returns_cancelled() -> None:
    """Two cancel() calls before the flow reacts must not cancel the host's task."""

    async def slow_provider() -> str:
        await asyncio.sleep(0.001)
        return "token"

    async def trial(delay: float) -> None:
        session = AsyncActivationSession(slow_provider, Instant(), policy(GENEROUS))
        running = asyncio.ensure_future(session.activate())
        await asyncio.sleep(delay)
        first, second = session.cancel(), session.cancel()
        result = await running  # raises CancelledError if the bug is back
        assert not asyncio.current_task().cancelling()
        if first:
            assert second
            assert result.reason is FailureReason.CANCELLED
            assert result.state is State.UNAUTHENTICATED
        else:
            assert result.state is State.AUTHENTICATED

    async def trials() -> None:
        for index in range(600):
            await trial((index % 7) * 0.0004)

    asyncio.run(trials())


def test_blocking_cancel_true_means_cancelled() -> None:
    """cancel() never answers True while activate() ends authenticated."""
    pool = WorkerPool(4)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen every race window
    try:
        _blocking_cancel_trials(pool)
    finally:
        sys.setswitchinterval(switch)


class YieldingLock:
    """A lock that lets other threads run right after each release: every window opens wide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        time.sleep(0.0002)


class Signalling:
    """An instant activator that says when it has been called: the flow is about to finish."""

    def __init__(self) -> None:
        self.entered = threading.Event()

    def activate(self, option: AuthenticationOption) -> None:
        self.entered.set()


def _blocking_cancel_trials(pool: WorkerPool) -> None:
    cancelled = 0
    for _ in range(150):
        activator = Signalling()
        session = ActivationSession(provider, activator, policy(GENEROUS), workers=pool)
        session._lock = YieldingLock()  # type: ignore[assignment]
        said: list[bool] = []

        def canceller(
            target: ActivationSession = session,
            signal: Signalling = activator,
            log: list[bool] = said,
        ) -> None:
            signal.entered.wait(5)  # cancel as the flow finishes: the narrowest window
            deadline = time.monotonic() + 0.02
            while time.monotonic() < deadline:
                if target.cancel():
                    log.append(True)
                    return

        spinner = threading.Thread(target=canceller)
        spinner.start()
        result = session.activate()
        spinner.join(5)
        if said:
            cancelled += 1
            assert result.reason is FailureReason.CANCELLED, result
        else:
            assert result.state is State.AUTHENTICATED
    assert cancelled  # the race was really run


_FORKING_HOST = """
import logging
import os
import threading
from functools import partial

import structlog

from policies import DefensivePolicy, RetryPolicy
from statemachine import ActivationSession, LocalActivator
from statemachine.hostcalls.workers import WorkerPool
from statemachine.tokens import TokenIssuer, TokenVerifier, generate_rsa

brand, platform = generate_rsa(), generate_rsa()
issuer = TokenIssuer(brand, platform, "https://brand.example")
verifier = TokenVerifier(platform, brand, issuer="https://brand.example")
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
pool = WorkerPool(4, max_hung_per_callable=2)
policy = DefensivePolicy(
    retry=RetryPolicy(max_retries=0), token_timeout=2.0, activation_timeout=10.0
)


def flow():
    session = ActivationSession(
        partial(issuer.issue, "visitor-1"), LocalActivator(verifier), policy, workers=pool
    )
    return session.activate()


# The parent's calls leave the pool's threads idle, four at once.
threads = [threading.Thread(target=flow) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # a worker forked from the host (gunicorn --preload, multiprocessing)
    os.close(read)
    lines = []
    for _ in range(4):
        result = flow()
        lines.append(f"{result.state.value} {result.reason and result.reason.name}")
    lines.append(f"{pool.hung} {pool.workers}")
    os.write(write, "|".join(lines).encode())
    os._exit(0)
os.close(write)
with os.fdopen(read) as answer:
    print(answer.read())
os.waitpid(pid, 0)
"""


def test_a_forked_child_does_not_hand_calls_to_its_parents_threads(tmp_path: Any) -> None:
    """A forked process has none of the pool's threads: its calls must still run.

    The parent's idle workers exist in the child as records only; a call handed to
    one waited out its timeout (the flow blocked), counted a hung thread that never
    returns, and past ``max_hung_per_callable`` the provider was refused for good.
    """
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _FORKING_HOST],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    *flows, pool_counts = done.stdout.strip().split("|")
    assert flows == ["authenticated None"] * 4
    hung, _workers = pool_counts.split()
    assert hung == "0"

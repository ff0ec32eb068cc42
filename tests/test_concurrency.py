"""Real asyncio concurrency, real threads, real clocks (bounded, never asserted as speed)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from policies import DefensivePolicy, RetryPolicy
from statemachine import (
    ActivationResult,
    ActivationSession,
    AsyncActivationSession,
    AuthenticationOption,
    FailureReason,
    State,
)
from tests.helpers import FAST_RETRY, anonymous


class GatedActivator:
    """Holds every activation until released, counting how many reached it."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def activate(self, option: AuthenticationOption) -> None:
        self.calls += 1
        self.entered.set()
        self.release.wait(10)


class AsyncGatedActivator:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def activate(self, option: AuthenticationOption) -> None:
        self.calls += 1
        await self.release.wait()


def test_two_concurrent_activations_on_one_async_session() -> None:
    async def go() -> tuple[list[ActivationResult], AsyncGatedActivator, AsyncActivationSession]:
        activator = AsyncGatedActivator()

        async def provider() -> str:
            await asyncio.sleep(0)
            return "token"

        session = AsyncActivationSession(provider, activator, DefensivePolicy(retry=FAST_RETRY))
        first = asyncio.ensure_future(session.activate())
        second = asyncio.ensure_future(session.activate())
        await asyncio.sleep(0.01)
        assert session.state is State.ACTIVATING
        activator.release.set()
        return list(await asyncio.gather(first, second)), activator, session

    results, activator, session = asyncio.run(go())
    assert activator.calls == 1
    assert sorted(r.status for r in results) == ["authentication-failure", "authentication-success"]
    rejected = next(r for r in results if r.reason is not None)
    assert rejected.reason is FailureReason.LOGIN_ONGOING
    assert rejected.to_dict()["authentication"]["reason"] == "A login is already ongoing"
    assert session.state is State.AUTHENTICATED


def test_eight_threads_on_one_blocking_session() -> None:
    activator = GatedActivator()
    session = ActivationSession(lambda: "token", activator, DefensivePolicy(retry=FAST_RETRY))
    barrier = threading.Barrier(8)
    results: list[ActivationResult] = []
    lock = threading.Lock()

    def visitor() -> None:
        barrier.wait()
        result = session.activate()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=visitor) for _ in range(8)]
    for t in threads:
        t.start()
    assert activator.entered.wait(10)
    deadline = time.monotonic() + 10
    while len(results) < 7 and time.monotonic() < deadline:
        time.sleep(0.001)
    activator.release.set()
    for t in threads:
        t.join(10)
    assert activator.calls == 1
    assert sum(r.state is State.AUTHENTICATED and r.reason is None for r in results) == 1
    assert [r.reason for r in results].count(FailureReason.LOGIN_ONGOING) == 7
    assert session.state is State.AUTHENTICATED


BOUND = 0.2  # configured timeout under test; the checks below allow generous slack


def _no_retry() -> RetryPolicy:
    return RetryPolicy(max_retries=0, base_delay=0, max_delay=0, jitter=0)


def test_hanging_async_provider_times_out_within_bounds() -> None:
    async def provider() -> str:
        await asyncio.sleep(60)
        return "never"

    async def go() -> ActivationResult:
        session = AsyncActivationSession(
            provider, GatedActivator(), DefensivePolicy(token_timeout=BOUND)
        )
        return await session.activate()

    started = time.monotonic()
    result = asyncio.run(go())
    assert time.monotonic() - started < BOUND + 2.0
    assert result.reason is FailureReason.TOKEN_UNAVAILABLE
    assert result.state is State.BLOCKED


def test_hanging_sync_provider_in_async_session_does_not_block_the_loop() -> None:
    gate = threading.Event()

    async def go() -> tuple[ActivationResult, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        session = AsyncActivationSession(
            lambda: gate.wait(60), GatedActivator(), DefensivePolicy(token_timeout=BOUND)
        )
        result = await session.activate()
        t.cancel()
        return result, ticks

    result, ticks = asyncio.run(go())
    gate.set()
    assert result.reason is FailureReason.TOKEN_UNAVAILABLE
    assert ticks >= 3  # the loop kept running while the provider hung


def test_hanging_activator_times_out_per_attempt_within_bounds() -> None:
    policy = DefensivePolicy(
        retry=RetryPolicy(max_retries=2, base_delay=0, max_delay=0, jitter=0),
        activation_timeout=BOUND,
    )
    activator = GatedActivator()
    session = ActivationSession(lambda: "token", activator, policy)
    started = time.monotonic()
    result = session.activate()
    elapsed = time.monotonic() - started
    activator.release.set()
    assert result.reason is FailureReason.ACTIVATION_TIMEOUT
    assert result.attempts == 3
    assert activator.calls == 3
    assert 3 * BOUND * 0.9 <= elapsed < 3 * BOUND + 2.0


def test_hanging_async_activator_times_out() -> None:
    async def go() -> ActivationResult:
        activator = AsyncGatedActivator()
        policy = DefensivePolicy(retry=_no_retry(), activation_timeout=BOUND)
        return await AsyncActivationSession(lambda: "t", activator, policy).activate()

    started = time.monotonic()
    result = asyncio.run(go())
    assert time.monotonic() - started < BOUND + 2.0
    assert result.reason is FailureReason.ACTIVATION_TIMEOUT


def test_cancelled_async_task_leaves_the_session_usable() -> None:
    async def go() -> tuple[State, list[ActivationResult], ActivationResult]:
        activator = AsyncGatedActivator()
        seen: list[ActivationResult] = []
        session = AsyncActivationSession(lambda: "t", activator, DefensivePolicy(retry=FAST_RETRY))
        task = asyncio.ensure_future(session.activate(seen.append))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        state = session.state
        activator.release.set()
        return state, seen, await session.activate()

    state, seen, again = asyncio.run(go())
    assert state is State.UNAUTHENTICATED
    assert [r.reason for r in seen] == [FailureReason.CANCELLED]
    assert again.state is State.AUTHENTICATED


def test_session_cancel_returns_a_cancelled_result_in_both_faces() -> None:
    activator = GatedActivator()
    session = ActivationSession(lambda: "t", activator, DefensivePolicy(retry=FAST_RETRY))
    out: list[ActivationResult] = []
    worker = threading.Thread(target=lambda: out.append(session.activate()))
    worker.start()
    assert activator.entered.wait(10)
    assert session.cancel()
    worker.join(10)
    activator.release.set()
    assert out[0].reason is FailureReason.CANCELLED
    assert out[0].state is State.UNAUTHENTICATED
    assert session.state is State.UNAUTHENTICATED
    assert not session.cancel()  # nothing running any more

    async def go() -> ActivationResult:
        gated = AsyncGatedActivator()
        s = AsyncActivationSession(lambda: "t", gated, DefensivePolicy(retry=FAST_RETRY))
        task = asyncio.ensure_future(s.activate())
        await asyncio.sleep(0.01)
        assert s.cancel()
        return await task

    result = asyncio.run(go())
    assert result.reason is FailureReason.CANCELLED
    assert result.state is State.UNAUTHENTICATED


def test_cancel_during_backoff_is_prompt() -> None:
    policy = anonymous(retry=RetryPolicy(base_delay=30, max_delay=30, jitter=0))

    class Failing:
        def activate(self, option: AuthenticationOption) -> None:
            if option.is_secured:
                from statemachine import ActivationError

                raise ActivationError(FailureReason.SERVER_ERROR)

    session = ActivationSession(lambda: "t", Failing(), policy)
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(session.activate()))
    worker.start()
    deadline = time.monotonic() + 10
    while session.state is not State.RETRYING and time.monotonic() < deadline:
        time.sleep(0.001)
    started = time.monotonic()
    session.cancel()
    worker.join(10)
    assert time.monotonic() - started < 2.0
    assert out[0].reason is FailureReason.CANCELLED


def test_logout_during_a_flow_is_refused_and_changes_nothing() -> None:
    from statemachine import TransitionNotAllowed

    activator = GatedActivator()
    session = ActivationSession(lambda: "t", activator, DefensivePolicy(retry=FAST_RETRY))
    worker = threading.Thread(target=session.activate)
    worker.start()
    assert activator.entered.wait(10)
    with pytest.raises(TransitionNotAllowed, match="'logout' is not allowed in state 'activating'"):
        session.logout()
    assert session.state is State.ACTIVATING
    activator.release.set()
    worker.join(10)
    assert session.state is State.AUTHENTICATED


def test_a_flow_ending_while_the_next_one_runs_leaves_the_next_one_cancellable(
    issuer: Any, verifier: Any
) -> None:
    """Thread A's flow ends (blocked) and its listeners run on; thread B activates again
    meanwhile. A's clean-up cleared the running flow's handle: B's flow, hanging in the
    activator, could not be cancelled (``cancel()`` answered False)."""
    from functools import partial

    from statemachine import ActivationError, FailureReason, LocalActivator

    release = threading.Event()
    local = LocalActivator(verifier)
    calls: list[int] = []

    class FirstRefusedThenHangs:
        def activate(self, option: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise ActivationError(FailureReason.INVALID_SIGNATURE)
            release.wait(30)  # B's flow waits here until cancelled (or released at the end)
            local.activate(option)

    def slow_listener(event: Any) -> None:
        if event.dest is State.BLOCKED:
            time.sleep(0.5)  # A's flow has ended; its listeners still run

    session = ActivationSession(
        partial(issuer.issue, "visitor-1"),
        FirstRefusedThenHangs(),
        DefensivePolicy(retry=FAST_RETRY, activation_timeout=60.0),
    )
    session.add_listener(slow_listener)
    first = threading.Thread(target=session.activate)
    first.start()
    deadline = time.monotonic() + 10
    while session.state is not State.BLOCKED and time.monotonic() < deadline:
        time.sleep(0.005)
    results: list[Any] = []
    second = threading.Thread(target=lambda: results.append(session.activate()))
    second.start()
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    first.join(10)  # A's clean-up is done: B still waits in the activator
    try:
        assert session.state is State.ACTIVATING
        assert session.cancel() is True
        second.join(10)
        assert not second.is_alive()
        assert results[0].reason is FailureReason.CANCELLED
    finally:
        release.set()
        second.join(30)


def test_an_async_flow_ending_while_the_next_one_runs_leaves_the_next_one_cancellable(
    issuer: Any, verifier: Any
) -> None:
    """The async face: A's flow awaits its listeners after it ended; B's flow, begun
    meanwhile, lost its handle to A's clean-up and ``cancel()`` answered False."""
    from functools import partial

    from statemachine import ActivationError, FailureReason, LocalActivator

    local = LocalActivator(verifier)
    calls: list[int] = []

    class FirstRefusedThenHangs:
        async def activate(self, option: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise ActivationError(FailureReason.INVALID_SIGNATURE)
            await asyncio.sleep(30)
            local.activate(option)

    async def slow_listener(event: Any) -> None:
        if event.dest is State.BLOCKED:
            await asyncio.sleep(0.3)

    async def trial() -> tuple[bool, Any]:
        session = AsyncActivationSession(
            partial(issuer.issue, "visitor-1"),
            FirstRefusedThenHangs(),
            DefensivePolicy(retry=FAST_RETRY, activation_timeout=60.0),
        )
        session.add_listener(slow_listener)
        first = asyncio.ensure_future(session.activate())
        while session.state is not State.BLOCKED:
            await asyncio.sleep(0.005)
        second = asyncio.ensure_future(session.activate())
        while len(calls) < 2:
            await asyncio.sleep(0.005)
        await asyncio.wait_for(first, 10)  # A's clean-up is done: B still waits
        answered = session.cancel()
        if not answered:
            second.cancel()
        try:
            result = await asyncio.wait_for(second, 10)
        except asyncio.CancelledError:
            result = None
        return answered, result

    answered, result = asyncio.run(trial())
    assert answered is True
    assert result is not None
    assert result.reason is FailureReason.CANCELLED

"""Cancellation at the worst moments: the callback is answered once, and nothing leaks into logs."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from policies import DefensivePolicy, RetryPolicy
from statemachine import AsyncActivationSession, AuthenticationOption, FailureReason, State
from statemachine.hostcalls.workers import WorkerPool

FAST = RetryPolicy(max_retries=0, base_delay=0.0, max_delay=0.0, jitter=0.0)


class Instant:
    def activate(self, option: AuthenticationOption) -> None:
        return None


def test_a_task_cancelled_before_its_first_step_still_answers_its_callback() -> None:
    async def listener(event: Any) -> None:
        return None

    async def trials() -> tuple[int, int]:
        unanswered = stuck = 0
        for index in range(1_500):
            calls: list[Any] = []
            session = AsyncActivationSession(
                lambda: "token", Instant(), DefensivePolicy(retry=FAST)
            )
            session.add_listener(listener)  # an async listener: one more place to be cancelled
            task = asyncio.ensure_future(session.activate(callback=calls.append))
            for _ in range(index % 4):  # 0: before the task ever ran; then a little later
                await asyncio.sleep(0)
            task.cancel()
            try:
                result = await task
            except asyncio.CancelledError:
                result = None
            if len(calls) != 1:
                unanswered += 1
            elif result is not None:
                assert calls == [result]
            if session.state.in_flight:
                stuck += 1
            elif calls and calls[0].reason is FailureReason.CANCELLED:
                assert calls[0].state is session.state
        return unanswered, stuck

    assert asyncio.run(trials()) == (0, 0)


def test_an_awaited_activate_is_still_a_coroutine() -> None:
    async def scenario() -> Any:
        session = AsyncActivationSession(lambda: "token", Instant())
        first = await session.activate()
        second = await asyncio.wait_for(session.activate(), 5)  # wrapped in a task
        await session.logout()
        third = await asyncio.create_task(session.activate_anonymously())
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert first.state is State.AUTHENTICATED
    assert second.reason is FailureReason.ALREADY_ACTIVATED
    assert third.state is State.ANONYMOUS


def test_no_future_exception_is_left_unretrieved_in_cancel_races() -> None:
    """Plain providers that fail after their flow was cancelled: asyncio must not log their text."""

    def fails_late() -> str:
        time.sleep(0.03)
        raise ValueError("the host's message, which might quote a token")

    async def scenario() -> list[Any]:
        seen: list[Any] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: seen.append(context)
        )
        pool = WorkerPool(8)
        for index in range(30):
            session = AsyncActivationSession(
                fails_late, Instant(), DefensivePolicy(retry=FAST, token_timeout=1.0), workers=pool
            )
            running = asyncio.ensure_future(session.activate())
            await asyncio.sleep(0.005 * (index % 3))
            session.cancel()
            result = await running
            assert result.state is not State.AUTHENTICATED
        deadline = time.monotonic() + 10
        while pool.hung and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        gc.collect()
        await asyncio.sleep(0.05)
        return seen

    seen = asyncio.run(scenario())
    assert [context.get("message") for context in seen] == []

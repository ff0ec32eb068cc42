"""Cancellation at the worst moments: the callback is answered once, and nothing leaks into logs."""

from __future__ import annotations

import asyncio
import contextlib
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


def test_a_flow_cancelled_while_a_listener_hears_its_first_step_comes_to_rest(
    issuer: Any, verifier: Any
) -> None:
    """An async listener that waits on the first transition is an await point of the flow:
    a cancellation there (a host's ``wait_for``) must end the flow, not strand it in flight."""
    from functools import partial

    from statemachine import LocalActivator

    async def slow(event: Any) -> None:
        await asyncio.sleep(0.5)

    async def trial() -> tuple[Any, ...]:
        calls: list[Any] = []
        session = AsyncActivationSession(
            partial(issuer.issue, "visitor-1"), LocalActivator(verifier), DefensivePolicy()
        )
        session.add_listener(slow)
        task = asyncio.ensure_future(session.activate(callback=calls.append))
        await asyncio.sleep(0.1)  # the flow is in fetching_token, awaiting the listener
        assert session.state is State.FETCHING_TOKEN
        with_cancel = session.cancel()  # the running flow: True, and activate says CANCELLED
        result = await asyncio.wait_for(task, 10)
        external = AsyncActivationSession(
            partial(issuer.issue, "visitor-1"), LocalActivator(verifier), DefensivePolicy()
        )
        external.add_listener(slow)
        outer = asyncio.ensure_future(external.activate(callback=calls.append))
        await asyncio.sleep(0.1)
        outer.cancel()  # the host's own cancellation, at the same await point
        with contextlib.suppress(asyncio.CancelledError):
            await outer
        return with_cancel, result, session.state, external.state, calls

    with_cancel, result, state, external_state, calls = asyncio.run(trial())
    assert with_cancel is True
    assert (result.state, result.reason) == (State.UNAUTHENTICATED, FailureReason.CANCELLED)
    assert state is State.UNAUTHENTICATED
    assert external_state is State.UNAUTHENTICATED  # not fetching_token for ever
    assert len(calls) == 2
    assert calls[1].reason is FailureReason.CANCELLED


def test_a_flow_cancelled_while_a_listener_hears_its_last_step_still_answers(
    issuer: Any, verifier: Any
) -> None:
    """Once the flow has ended, ``cancel()`` finds nothing to cancel (False), and a host's
    cancellation while an async listener hears the outcome still answers the callback."""
    from functools import partial

    from statemachine import LocalActivator

    async def slow(event: Any) -> None:
        if event.dest is State.AUTHENTICATED:
            await asyncio.sleep(0.5)

    async def trial(ours: bool) -> tuple[Any, ...]:
        calls: list[Any] = []
        session = AsyncActivationSession(
            partial(issuer.issue, "visitor-1"), LocalActivator(verifier), DefensivePolicy()
        )
        session.add_listener(slow)
        task = asyncio.ensure_future(session.activate(callback=calls.append))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if session.state is State.AUTHENTICATED:
                break
        assert session.state is State.AUTHENTICATED  # the listener hears it now
        answered = session.cancel() if ours else task.cancel()
        try:
            result = await asyncio.wait_for(task, 10)
        except asyncio.CancelledError:
            result = None
        return answered, result, calls, session.state

    answered, result, calls, state = asyncio.run(trial(ours=True))
    assert answered is False  # the flow had ended: True would promise a CANCELLED result
    assert result is not None
    assert result.state is State.AUTHENTICATED
    assert calls == [result]
    assert state is State.AUTHENTICATED
    answered, result, calls, state = asyncio.run(trial(ours=False))
    assert answered is True
    assert result is None
    assert len(calls) == 1
    assert calls[0].state is State.AUTHENTICATED
    assert state is State.AUTHENTICATED

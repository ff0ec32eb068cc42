"""Recognising async host code, in every shape a host may hand us."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import pytest

from statemachine.engine._effects import Outcome
from statemachine.hostcalls._calls import call_async, is_async_callable, run_awaitable


async def coroutine_function() -> str:
    return "a"


def plain_function() -> str:
    return "s"


class AsyncCallable:
    async def __call__(self) -> str:
        return "a"


class SyncCallable:
    def __call__(self) -> str:
        return "s"


class Methods:
    async def async_method(self) -> str:
        return "a"

    def sync_method(self) -> str:
        return "s"


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (coroutine_function, True),
        (functools.partial(coroutine_function), True),
        (functools.partial(functools.partial(coroutine_function)), True),
        (AsyncCallable(), True),
        (Methods().async_method, True),
        (plain_function, False),
        (lambda: "s", False),
        (SyncCallable(), False),
        (Methods().sync_method, False),
        (functools.partial(plain_function), False),
        (len, False),
    ],
)
def test_is_async_callable(fn: Any, expected: bool) -> None:
    assert is_async_callable(fn) is expected


def test_run_awaitable_inside_a_running_loop_uses_its_own_loop() -> None:
    async def outer() -> str:
        return str(run_awaitable(coroutine_function()))

    assert run_awaitable(coroutine_function()) == "a"
    assert asyncio.run(outer()) == "a"


# -- call_async: an async call's first step is taken before any timer is armed ----------
def _counting_timers(loop: asyncio.AbstractEventLoop) -> list[float]:
    armed: list[float] = []
    call_at = loop.call_at

    def counted(when: float, *args: Any, **kwargs: Any) -> Any:
        armed.append(when)
        return call_at(when, *args, **kwargs)

    loop.call_at = counted  # type: ignore[method-assign]
    return armed


def test_an_async_call_that_never_waits_arms_no_timer() -> None:
    async def instant() -> str:
        return "t"

    async def main() -> tuple[Outcome, list[float]]:
        armed = _counting_timers(asyncio.get_running_loop())
        return await call_async(instant, True, (), 5.0), armed

    outcome, armed = asyncio.run(main())
    assert outcome == Outcome(value="t")
    assert armed == []


def test_an_async_call_that_waits_goes_on_under_the_deadline_of_its_start() -> None:
    async def waits(n: int) -> int:
        time.sleep(0.2)  # a first step that takes its time before it waits: counted too
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return n * 2

    async def main() -> tuple[Outcome, list[float], float]:
        loop = asyncio.get_running_loop()
        armed = _counting_timers(loop)
        started = loop.time()
        return await call_async(waits, True, (21,), 1.0), armed, started

    outcome, armed, started = asyncio.run(main())
    assert outcome == Outcome(value=42)
    deadlines = [when for when in armed if when >= started + 0.5]
    assert len(deadlines) == 1
    assert started + 1.0 <= deadlines[0] < started + 1.1  # not 1.2: from the call's start


def test_an_async_call_that_waits_past_its_timeout_times_out_and_is_cancelled() -> None:
    finished: list[str] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            finished.append("cancelled")
            raise
        return "late"

    outcome = asyncio.run(call_async(slow, True, (), 0.05))
    assert isinstance(outcome.error, TimeoutError)
    assert finished == ["cancelled"]


def test_an_exception_while_waiting_reaches_the_async_call() -> None:
    async def recovers() -> str:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        loop.call_soon(future.set_exception, KeyError("gone"))
        try:
            await future
        except KeyError:
            return "recovered"
        return "not reached"

    assert asyncio.run(call_async(recovers, True, (), 1.0)) == Outcome(value="recovered")


def test_cancelling_the_caller_cancels_an_async_call_that_waits() -> None:
    seen: list[str] = []

    async def waits() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "late"

    async def main() -> None:
        task = asyncio.create_task(call_async(waits, True, (), None))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == ["cancelled"]


def test_an_async_call_that_raises_before_waiting_is_its_outcome() -> None:
    async def fails() -> str:
        raise RuntimeError("no token")

    outcome = asyncio.run(call_async(fails, True, (), 1.0))
    assert isinstance(outcome.error, RuntimeError)

"""Recognising async host code, in every shape a host may hand us."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from statemachine.hostcalls._calls import is_async_callable, run_awaitable


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

"""Calling host code that may be sync or async, without letting it break a flow."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from statemachine import logs
from statemachine.effects import Outcome
from statemachine.results import ActivationResult
from statemachine.workers import WorkerPool, default_pool

Callback = Callable[[ActivationResult], Any]


def is_async_callable(fn: object) -> bool:
    """True for coroutine functions, partials of them, and objects with an async ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn):
        return False
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def run_awaitable(awaitable: Awaitable[Any]) -> Any:
    """Run an awaitable to completion from blocking code.

    In a thread that already runs an event loop, ``asyncio.run`` is refused,
    so the awaitable gets a loop of its own on a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(awaitable))
    box: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            box.append(asyncio.run(_await(awaitable)))
        except BaseException as error:  # noqa: BLE001 - handed back to the caller
            errors.append(error)

    helper = threading.Thread(target=target, name="secured-activation-await", daemon=True)
    helper.start()
    helper.join()
    if errors:
        raise errors[0]
    return box[0]


def _log_callback_error(logger: Any, error: Exception) -> None:
    logs.emit(logger.error, logs.CALLBACK_ERROR, error_type=type(error).__name__)


def notify_blocking(callback: Callback | None, result: ActivationResult, logger: Any) -> None:
    """Call the host's callback once; its failure is logged and changes nothing."""
    if callback is None:
        return
    try:
        value = callback(result)
        if inspect.isawaitable(value):
            run_awaitable(value)
    except Exception as error:  # noqa: BLE001 - a host callback must not change the outcome
        _log_callback_error(logger, error)


async def notify_async(callback: Callback | None, result: ActivationResult, logger: Any) -> None:
    if callback is None:
        return
    try:
        value = callback(result)
        if inspect.isawaitable(value):
            await value
    except Exception as error:  # noqa: BLE001 - a host callback must not change the outcome
        _log_callback_error(logger, error)


class WorkersExhausted(Exception):
    """Every worker for plain host calls is held by a call that has not returned."""


async def call_async(
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    timeout: float | None,
    pool: WorkerPool | None = None,
) -> Outcome:
    """Call host code from asyncio under ``timeout``; every failure becomes an ``Outcome``.

    Plain callables run on the library's worker pool, never on the loop's
    default executor; the timeout starts when the call does (there is no queue).
    """
    try:
        future = None if is_async else (pool or default_pool()).submit(fn, *args)
        if not is_async and future is None:
            return Outcome(error=WorkersExhausted())
        async with asyncio.timeout(timeout):
            value = fn(*args) if future is None else await asyncio.wrap_future(future)
            while asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
        return Outcome(value=value)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - the core classifies every failure
        return Outcome(error=error)


def call_blocking(fn: Callable[..., Any], is_async: bool, args: tuple[Any, ...]) -> Outcome:
    """Call host code from blocking code, with no timeout."""
    try:
        value = fn(*args)
        if is_async or asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = run_awaitable(value)
        return Outcome(value=value)
    except Exception as error:  # noqa: BLE001 - the core classifies every failure
        return Outcome(error=error)


def submit_blocking(
    fn: Callable[..., Any], is_async: bool, args: tuple[Any, ...], pool: WorkerPool | None = None
) -> Future[Outcome] | None:
    """Start a blocking host call on the pool; ``None`` when every worker is busy."""
    return (pool or default_pool()).submit(call_blocking, fn, is_async, args)


def call_blocking_timed(
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    timeout: float | None,
    pool: WorkerPool | None = None,
) -> Outcome:
    """``call_blocking`` under ``timeout``: past it the call is left to its worker, not joined."""
    if timeout is None:
        return call_blocking(fn, is_async, args)
    future = submit_blocking(fn, is_async, args, pool)
    if future is None:
        return Outcome(error=WorkersExhausted())
    try:
        outcome: Outcome = future.result(timeout)
    except TimeoutError:
        return Outcome(error=TimeoutError())
    return outcome

"""Calling host code that may be sync or async, without letting it break a flow."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from statemachine import logs
from statemachine.effects import Outcome
from statemachine.results import ActivationResult
from statemachine.workers import Job, WorkerPool, WorkersExhausted, callable_key, default_pool

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


async def call_async(
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    timeout: float | None,
    pool: WorkerPool | None = None,
) -> Outcome:
    """Call host code from asyncio under ``timeout``; every failure becomes an ``Outcome``.

    Plain callables run on the library's worker pool, never on the loop's
    default executor; the timeout counts from when the call starts, not from
    when it began waiting for a worker.
    """
    try:
        if is_async:
            async with asyncio.timeout(timeout):
                value = await _settle(fn(*args))
            return Outcome(value=value)
        pool = pool or default_pool()
        job = pool.submit(fn, *args)
        if job is None:
            return Outcome(error=WorkersExhausted())
        waiting = asyncio.wrap_future(job.future)
        try:
            while not waiting.done():
                left = None if timeout is None else job.remaining(timeout)
                if left is not None and left <= 0:
                    pool.abandon(job)
                    return Outcome(error=TimeoutError())
                slice_ = left if left is not None else (timeout or 3600.0)
                await asyncio.wait((waiting,), timeout=slice_)
        except asyncio.CancelledError:
            pool.abandon(job)
            raise
        value = waiting.result()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            left = None if timeout is None else max(0.0, job.remaining(timeout) or 0.0)
            async with asyncio.timeout(left):
                value = await _settle(value)
        return Outcome(value=value)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - the core classifies every failure
        return Outcome(error=error)


async def _settle(value: Any) -> Any:
    while asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        value = await value
    return value


def call_blocking(fn: Callable[..., Any], is_async: bool, args: tuple[Any, ...]) -> Outcome:
    """Call host code from blocking code, with no timeout."""
    try:
        value = fn(*args)
        if is_async or asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = run_awaitable(value)
        return Outcome(value=value)
    except Exception as error:  # noqa: BLE001 - the core classifies every failure
        return Outcome(error=error)


def wait_blocking(
    job: Job, timeout: float, pool: WorkerPool, wake: threading.Event | None = None
) -> Outcome | None:
    """Wait for a pooled call; past ``timeout`` (counted from its start) abandon it.

    ``wake`` lets another thread interrupt the wait (a cancel): then ``None``.
    """
    event = wake or threading.Event()
    job.future.add_done_callback(lambda _: event.set())
    while not job.future.done():
        left = job.remaining(timeout)
        if left is not None and left <= 0:
            pool.abandon(job)
            return Outcome(error=TimeoutError())
        event.wait(left if left is not None else timeout)
        if wake is not None and wake.is_set() and not job.future.done():
            pool.abandon(job)
            return None
    try:
        outcome: Outcome = job.future.result()
    except WorkersExhausted as error:
        return Outcome(error=error)
    return outcome


def call_pooled(
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    timeout: float,
    pool: WorkerPool | None = None,
    wake: threading.Event | None = None,
) -> Outcome | None:
    """A blocking host call on a pooled worker under ``timeout``; ``None`` if ``wake`` fired."""
    pool = pool or default_pool()
    job = pool.submit(call_blocking, fn, is_async, args, key=callable_key(fn))
    if job is None:
        return Outcome(error=WorkersExhausted())
    return wait_blocking(job, timeout, pool, wake)


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
    outcome = call_pooled(fn, is_async, args, timeout, pool)
    assert outcome is not None  # only a wake interrupts, and none was given
    return outcome

"""Calling host code that may be sync or async, without letting it break a flow.

This is the edge between the engine and host code: a call's raw ``Outcome``
(a value, or whatever it raised) is sorted here into the typed answer the core
takes (``token_answer``, ``activation_answer``), so the sans-IO core never
inspects host output or exceptions.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, Protocol, TypeVar

from statemachine.engine._effects import (
    ACTIVATED,
    Activated,
    ActivationFailed,
    Outcome,
    TokenFailed,
    TokenReceived,
)
from statemachine.hostcalls.workers import (
    Job,
    Wake,
    WorkerPool,
    WorkersExhausted,
    callable_key,
    default_pool,
)
from statemachine.protocol.errors import ActivationError
from statemachine.protocol.options import SECURED, AuthenticationOption
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.results import ActivationResult
from statemachine.signals import logs

Callback = Callable[[ActivationResult], Any]
T = TypeVar("T")


class AnsweredCoroutine(Coroutine[Any, Any, T]):
    """A coroutine that still answers when cancelled before its first step.

    A task cancelled before it starts never runs its coroutine's body, so a
    plain ``async def activate(callback)`` would never call the callback the
    host handed it. This wrapper starts ``start()`` on the first step; if the
    first thing it receives is a cancellation, it runs ``early(error)``
    instead (which answers the callback and re-raises) — the call is
    answered exactly once either way.
    """

    __slots__ = ("_early", "_running", "_start")

    def __init__(
        self,
        start: Callable[[], Coroutine[Any, Any, T]],
        early: Callable[[BaseException], Coroutine[Any, Any, T]],
    ) -> None:
        self._start = start
        self._early = early
        self._running: Coroutine[Any, Any, T] | None = None

    def send(self, value: Any) -> Any:
        if self._running is None:
            self._running = self._start()
        return self._running.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:  # noqa: ARG002
        error = typ if isinstance(typ, BaseException) else (typ() if val is None else val)
        if self._running is None:
            if isinstance(error, asyncio.CancelledError):
                self._running = self._early(error)
                return self._running.send(None)
            self._running = self._start()
        return self._running.throw(error)

    def close(self) -> None:
        if self._running is not None:
            self._running.close()

    def __await__(self) -> Any:
        return self

    def __iter__(self) -> AnsweredCoroutine[T]:
        return self

    def __next__(self) -> Any:
        return self.send(None)


TokenProvider = Callable[[], Any]
"""The host's token provider (sync or async): no argument; a token, an option or a mapping."""


class HasLogger(Protocol):
    """Whose logger a failure is logged on (a core's, bound only when first used)."""

    @property
    def logger(self) -> Any: ...


def token_answer(outcome: Outcome, owner: HasLogger) -> TokenReceived | TokenFailed:
    """The provider's outcome as the core's answer: a usable option, or the failure's reason."""
    error = outcome.error
    if isinstance(error, WorkersExhausted):  # our congestion, not the host's failure
        return TokenFailed(FailureReason.WORKERS_EXHAUSTED)
    token = _read_provider_output(outcome)
    if isinstance(token, FailureReason):
        if error is not None and not isinstance(error, TimeoutError):
            logs.emit(owner.logger.warning, logs.PROVIDER_ERROR, error_type=type(error).__name__)
        return TokenFailed(token)
    return TokenReceived(token)


def activation_answer(outcome: Outcome, owner: HasLogger) -> Activated | ActivationFailed:
    """The activator's outcome as the core's answer: accepted, or why not."""
    error = outcome.error
    if error is None:
        return ACTIVATED
    if isinstance(error, ActivationError):
        return ActivationFailed(error.reason)
    if isinstance(error, TimeoutError):
        return ActivationFailed(FailureReason.ACTIVATION_TIMEOUT)
    if isinstance(error, WorkersExhausted):
        return ActivationFailed(FailureReason.WORKERS_EXHAUSTED)
    logs.emit(owner.logger.warning, logs.ACTIVATOR_ERROR, error_type=type(error).__name__)
    return ActivationFailed(FailureReason.SERVER_ERROR)


def _read_provider_output(outcome: Outcome) -> AuthenticationOption | FailureReason:
    """Accept the three shapes a provider may return; anything else is its failure.

    Inspecting host output runs host code (a mapping's lookups, a ``str``
    subclass's methods); if that raises, the provider failed, like any other.
    """
    if outcome.error is not None or outcome.value is None:
        return FailureReason.TOKEN_UNAVAILABLE
    try:
        return _option_from(outcome.value)
    except Exception:  # noqa: BLE001 - hostile provider output is the provider's failure
        return FailureReason.INVALID_OPTION


def _option_from(value: object) -> AuthenticationOption | FailureReason:
    if isinstance(value, str):
        option = AuthenticationOption.secured(str.__str__(value))
    elif isinstance(value, AuthenticationOption):
        option = value
    elif isinstance(value, Mapping):
        inner = value.get("authenticationOption")
        if not isinstance(inner, Mapping):
            return FailureReason.INVALID_OPTION
        option = AuthenticationOption(str(inner.get("type")), inner.get("token"))
    else:
        return FailureReason.INVALID_OPTION
    token = option.token
    if option.type != SECURED or not isinstance(token, str):
        return FailureReason.INVALID_OPTION
    if type(token) is not str:  # a str subclass's methods are host code: keep the plain text
        token = str.__str__(token)
        option = AuthenticationOption.secured(token)
    if not str.strip(token):
        return FailureReason.INVALID_OPTION
    return option


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


def _log_callback_error(owner: HasLogger, error: Exception) -> None:
    logs.emit(owner.logger.error, logs.CALLBACK_ERROR, error_type=type(error).__name__)


def notify_blocking(callback: Callback | None, result: ActivationResult, owner: HasLogger) -> None:
    """Call the host's callback once; its failure is logged and changes nothing."""
    if callback is None:
        return
    try:
        value = callback(result)
        if inspect.isawaitable(value):
            run_awaitable(value)
    except Exception as error:  # noqa: BLE001 - a host callback must not change the outcome
        _log_callback_error(owner, error)


async def notify_async(
    callback: Callback | None, result: ActivationResult, owner: HasLogger
) -> None:
    if callback is None:
        return
    try:
        value = callback(result)
        if inspect.isawaitable(value):
            await value
    except Exception as error:  # noqa: BLE001 - a host callback must not change the outcome
        _log_callback_error(owner, error)


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
            return Outcome(value=await _call_coroutine(fn, args, timeout))
        pool = pool or default_pool()
        job = pool.submit(fn, *args)
        if job is None:
            return Outcome(error=WorkersExhausted())
        waiting = asyncio.wrap_future(job.future)
        waiting.add_done_callback(_retrieved)  # an abandoned call may still fail: never logged
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
    except asyncio.CancelledError as error:
        if _cancelled_for_real():
            raise
        return Outcome(error=error)  # host code's own (a future it awaited was cancelled)
    except Exception as error:  # noqa: BLE001 - token_answer or activation_answer sorts it
        return Outcome(error=error)


def _cancelled_for_real() -> bool:
    """Whether a ``CancelledError`` is a cancellation of the flow's task, not host code's.

    A provider that awaits a future someone else cancelled (a closed client's
    request) raises ``CancelledError`` though nobody cancelled the flow; read
    as a cancellation, it would skip the policy and reach a caller that never
    cancelled anything. ``cancelling()`` counts the requests to cancel this task.
    """
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def _call_coroutine(
    fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None
) -> Any:
    """Await ``fn(*args)`` under ``timeout``; no timer when it never waits.

    A provider that mints in process (``async def`` around a signing call)
    finishes on its first step, and a timeout can only ever interrupt a
    coroutine where it waits. So its first step is taken here, before any
    timer: if it finished, that is its answer, and the timer asyncio would
    have armed and cancelled (a third of the call's cost) is never armed. If
    it waits, the rest of it runs under the deadline counted from the call's
    start, exactly as ``asyncio.timeout`` around the whole call would.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    value = fn(*args)
    if type(value) is types.CoroutineType:
        try:
            waits_on = value.send(None)
        except StopIteration as done:
            value = done.value
        else:
            async with asyncio.timeout_at(deadline):
                value = await resumed(value, waits_on)
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        async with asyncio.timeout_at(deadline):
            value = await _settle(value)
    return value


@types.coroutine
def resumed(coroutine: Coroutine[Any, Any, Any], waits_on: Any) -> Generator[Any, Any, Any]:
    """Go on with a coroutine whose first step was taken, as ``await coroutine`` would have.

    ``waits_on`` is what that step yielded (the future it waits for): it goes
    to the task driving us, and every answer, exception or cancellation from
    the task goes back into the coroutine (``yield from``'s rules).
    """
    while True:
        try:
            sent = yield waits_on
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as error:  # noqa: BLE001 - handed to the coroutine, as await does
            try:
                waits_on = coroutine.throw(error)
            except StopIteration as done:
                return done.value
        else:
            try:
                waits_on = coroutine.send(sent)
            except StopIteration as done:
                return done.value


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a finished call's outcome as seen.

    A call abandoned (timed out, or its flow cancelled) may fail later; unread,
    asyncio would log "Future exception was never retrieved" with the host's
    own exception message, which may quote a token.
    """
    if not future.cancelled():
        future.exception()


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
    except (Exception, asyncio.CancelledError) as error:  # noqa: BLE001 - sorted by the answers
        # No task of ours runs here: a CancelledError is host code's own, its failure.
        return Outcome(error=error)


def wait_blocking(
    job: Job, timeout: float, pool: WorkerPool, wake: Wake | threading.Event | None = None
) -> Outcome | None:
    """Wait for a pooled call; past ``timeout`` (counted from its start) abandon it.

    ``wake`` lets another thread interrupt the wait (a cancel): then ``None``.
    Without one, the wait is on the job's own lock: a single wake-up.
    """
    if wake is not None:
        job.notify(wake)
    while not job.done():
        left = job.remaining(timeout)
        if left is not None and left <= 0:
            pool.abandon(job)
            return Outcome(error=TimeoutError())
        slice_ = left if left is not None else timeout
        if wake is None:
            job.wait(slice_)
            continue
        wake.wait(slice_)
        if wake.is_set() and not job.done():
            pool.abandon(job)
            return None
    try:
        outcome: Outcome = job.result()
    except WorkersExhausted as error:
        return Outcome(error=error)
    return outcome


def call_pooled(
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    timeout: float,
    pool: WorkerPool | None = None,
    wake: Wake | threading.Event | None = None,
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

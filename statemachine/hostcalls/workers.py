"""Threads the library owns for plain (sync) host calls: bounded, reused, and fair.

Host code may hang. If plain providers and activators ran on the event loop's
default executor, hung calls would starve the application's own
``to_thread`` and DNS lookups; if each call had a thread of its own, hung
calls would pile up threads until the process cannot start any more. So host
calls run here instead, on reused threads, with three bounds:

- ``max_workers`` *live* calls at once: a call waits for a free worker when
  that many run within their timeouts; that wait is *ours* and never counts
  against the host's timeout, which starts when the call does;
- a call past its timeout is *abandoned*: its flow moves on, and its thread
  counts as hung (no longer live) until the call returns, then it is reused.
  A replacement thread starts for the calls still waiting, up to the hard cap
  ``max_threads`` (live and hung together): threads never grow without bound;
- each host callable (its code, so a closure made per request is one callable)
  has its own budget of hung threads, ``max_hung_per_callable``. When it is
  spent, only that callable is refused at once (its waiting calls too) with
  ``WorkersExhausted``, and its flows end with ``FailureReason.WORKERS_EXHAUSTED``;
  calls of every other callable still run. When the hard cap is reached and
  every thread is hung, every call is refused. Service resumes by itself as
  soon as a hung call returns;
- a worker idle for ``idle_timeout`` seconds exits, so a burst leaves nothing.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
import time
import weakref
from _thread import allocate_lock as _allocate_lock
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any, Final, cast

DEFAULT_MAX_WORKERS: Final = min(64, 8 * (os.cpu_count() or 1))
"""Plain host calls that may run within their timeouts at once, per process."""

THREADS_PER_WORKER: Final = 4
"""The hard cap on threads (live and hung together) is this many per live worker."""

MAX_THREADS: Final = 10_000


class WorkersExhausted(Exception):
    """Every worker a host callable may use is held by one of its calls that has not returned."""


def callable_key(fn: Callable[..., Any]) -> object:
    """What counts as "one host callable" for its hung budget: the code it runs.

    A partial counts as its function, a bound method as its function, a
    closure built per request as its code (so a host's per-request provider
    is one callable, however many closures it makes), an object as its type.
    """
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    target = getattr(target, "__func__", target)  # a bound method: its function
    code = getattr(target, "__code__", None)
    if code is not None:
        return cast(object, code)
    if inspect.isbuiltin(target):
        return id(target)  # builtins live as long as the interpreter
    return type(target)  # an object with ``__call__``: its class


class Job:
    """One host call: its outcome, and when it started (``None`` while it waits).

    The blocking caller waits on ``_done``, a bare lock held from creation
    and released once when the call ends: one wake-up, no condition variable,
    no ``Future``. A ``Future`` (``future``) is made only when an asyncio
    caller or a test asks for one.
    """

    __slots__ = (
        "_done",
        "_error",
        "_finished",
        "_future",
        "_notify",
        "_value",
        "abandoned",
        "args",
        "fn",
        "key",
        "started_at",
    )

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], key: object) -> None:
        self.fn = fn
        self.args = args
        self.key = key
        self.started_at: float | None = None
        self.abandoned = False
        self._done = _allocate_lock()
        self._done.acquire()
        self._finished = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._future: Future[Any] | None = None
        self._notify: Wake | threading.Event | None = None

    def remaining(self, timeout: float) -> float | None:
        """Seconds left of ``timeout`` since the call started; None while it still waits."""
        started = self.started_at
        if started is None:
            return None
        return timeout - (time.monotonic() - started)

    def done(self) -> bool:
        return self._finished

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for the call to end; True when it has."""
        if self._done.acquire(True, max(timeout, 0.0)):
            self._done.release()  # stays open for any later waiter
            return True
        return self._finished

    def result(self) -> Any:
        """The call's value, or raise what it raised (only once it is done)."""
        if self._error is not None:
            raise self._error
        return self._value

    def notify(self, event: Wake | threading.Event) -> None:
        """Set ``event`` when the call ends (at once if it has)."""
        with _JOBS:
            if not self._finished:
                self._notify = event
                return
        event.set()

    @property
    def future(self) -> Future[Any]:
        """The call as a ``concurrent.futures.Future`` (made on first use)."""
        with _JOBS:
            future = self._future
            if future is None:
                future = self._future = Future()
                if not self._finished:
                    return future
            else:
                return future
        _settle_future(future, self._value, self._error)
        return future

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome and wake whoever waits (once)."""
        with _JOBS:
            if self._finished:
                return
            self._value = value
            self._error = error
            self._finished = True
            future = self._future
            event = self._notify
        self._done.release()
        if event is not None:
            event.set()
        if future is not None:
            _settle_future(future, value, error)


def _settle_future(future: Future[Any], value: Any, error: BaseException | None) -> None:
    if isinstance(error, CancelledError):
        future.cancel()
        future.set_running_or_notify_cancel()
    elif future.set_running_or_notify_cancel():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


_JOBS = threading.Lock()  # guards the rare paths of a job (future made, notify registered)


class Wake:
    """A one-shot wake-up for a waiting flow: ``threading.Event``'s ``set``/``wait``/``is_set``
    on one bare lock (no condition variable: a set costs one lock release, a wait one acquire).
    """

    __slots__ = ("_flag", "_lock")

    def __init__(self) -> None:
        self._flag = False
        self._lock = _allocate_lock()
        self._lock.acquire()

    def set(self) -> None:
        with _JOBS:
            if self._flag:
                return
            self._flag = True
        self._lock.release()

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        if self._lock.acquire(True, -1 if timeout is None else max(timeout, 0.0)):
            self._lock.release()  # stays open for any later waiter
            return True
        return self._flag


class _Worker:
    """A pooled thread's mailbox: ``wake`` is held while it idles; a job given to it opens it."""

    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: Job | None = None
        self.wake = _allocate_lock()
        self.wake.acquire()


class WorkerPool:
    def __init__(
        self,
        max_workers: int = DEFAULT_MAX_WORKERS,
        *,
        max_threads: int | None = None,
        max_hung_per_callable: int | None = None,
        idle_timeout: float = 60.0,
        name: str = "secured-activation-host-call",
    ) -> None:
        _check_size("max_workers", max_workers, 1)
        if max_threads is None:
            max_threads = min(MAX_THREADS, THREADS_PER_WORKER * max_workers)
        _check_size("max_threads", max_threads, max_workers)
        if max_hung_per_callable is None:
            max_hung_per_callable = max(1, max_workers // 2)
        _check_size("max_hung_per_callable", max_hung_per_callable, 1)
        self.max_workers = max_workers
        self.max_threads = max_threads
        self.max_hung_per_callable = max_hung_per_callable
        self.idle_timeout = idle_timeout
        self.name = name
        self._lock = threading.Lock()
        self._pending: deque[Job] = deque()
        self._idle: list[_Worker] = []  # a stack: the most recently busy thread is reused first
        self._workers = 0
        self._hung = 0
        self._hung_by: Counter[object] = Counter()
        _POOLS.add(self)

    def _forget_threads(self) -> None:
        """In a forked child: none of the pool's threads exist here, nor the calls they ran.

        The parent's idle workers would be handed calls no thread runs (each waited
        out its timeout, then counted as a hung thread that never returns, until the
        callable was refused for good); its waiting calls belong to flows of threads
        the child does not have either. The child starts with an empty pool.
        """
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._pending = deque()
        self._idle = []
        self._workers = 0
        self._hung = 0
        self._hung_by = Counter()

    def __repr__(self) -> str:
        return (
            f"WorkerPool(max_workers={self.max_workers}, max_threads={self.max_threads}, "
            f"workers={self._workers}, hung={self._hung}, waiting={len(self._pending)})"
        )

    @property
    def hung(self) -> int:
        """Threads held by an abandoned call that has not returned yet."""
        return self._hung

    @property
    def workers(self) -> int:
        """Threads alive, live and hung together (never above ``max_threads``)."""
        return self._workers

    def submit(self, fn: Callable[..., Any], *args: Any, key: object = None) -> Job | None:
        """Queue ``fn(*args)`` for the next free worker; ``None`` if it is refused.

        ``key`` names the host callable whose hung budget the call counts
        against (by default ``callable_key(fn)``). An idle worker is handed
        the call directly (its start time is then the hand-over).
        """
        job = Job(fn, args, callable_key(fn) if key is None else key)
        with self._lock:
            if self._hung and self._refuses(job.key):
                return None
            if self._idle:
                worker = self._idle.pop()
                job.started_at = time.monotonic()
                worker.job = job
                worker.wake.release()
                return job
            self._pending.append(job)
            if self._may_start():
                self._start()
        return job

    def abandon(self, job: Job) -> None:
        """The caller stopped waiting; a call still running now holds a hung thread."""
        refused: list[Job] = []
        with self._lock:
            if job.abandoned or job.done():
                return
            job.abandoned = True
            if job.started_at is None:  # never started: just drop it
                with contextlib.suppress(ValueError):
                    self._pending.remove(job)
                job.finish(error=CancelledError())
                return
            self._hung += 1
            self._hung_by[job.key] += 1
            kept: deque[Job] = deque()
            for waiting in self._pending:
                (refused if self._refuses(waiting.key) else kept).append(waiting)
            self._pending = kept
            # The hung thread no longer counts as live: a replacement takes the waiting calls.
            for _ in range(min(len(kept), self.max_threads)):
                if self._idle or not self._may_start():
                    break
                self._start()
        for waiting in refused:
            waiting.finish(error=WorkersExhausted())

    def _refuses(self, key: object) -> bool:
        if self._hung_by[key] >= self.max_hung_per_callable:
            return True
        return self._hung >= self._workers and self._workers >= self.max_threads

    def _may_start(self) -> bool:
        live = self._workers - self._hung
        return live < self.max_workers and self._workers < self.max_threads

    def _start(self) -> None:
        self._workers += 1
        threading.Thread(target=self._work, name=self.name, daemon=True).start()

    def _next(self, me: _Worker) -> Job | None:
        """Under the lock: the next waiting call, or None after joining the idle stack."""
        if self._pending:
            job = self._pending.popleft()
            job.started_at = time.monotonic()
            return job
        self._idle.append(me)
        return None

    def _work(self) -> None:
        me = _Worker()
        lock = self._lock
        with lock:
            job = self._next(me)
        while True:
            if job is None:
                if not me.wake.acquire(True, self.idle_timeout):
                    with lock:
                        if me.job is None:  # still idle: leave
                            self._idle.remove(me)
                            self._workers -= 1
                            return
                    me.wake.acquire()  # handed a call as the wait ran out: take it
                job, me.job = me.job, None
                assert job is not None
            try:
                job.finish(job.fn(*job.args))
            except BaseException as error:  # noqa: BLE001 - handed to whoever waits
                job.finish(error=error)
            job.fn = job.args = None  # type: ignore[assignment]  # drop references
            with lock:
                if job.abandoned:
                    self._hung -= 1
                    self._hung_by[job.key] -= 1
                    if self._hung_by[job.key] <= 0:
                        del self._hung_by[job.key]
                    if self._workers - self._hung > self.max_workers:
                        self._workers -= 1  # a replacement took this thread's place: leave
                        return
                job = self._next(me)


def _check_size(name: str, value: object, low: int) -> None:
    if type(value) is not int or not low <= value <= MAX_THREADS:
        raise ValueError(f"{name} must be an integer from {low} to {MAX_THREADS}, got {value!r}")


_DEFAULT: WorkerPool | None = None
_DEFAULT_LOCK = threading.Lock()


_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _forget_threads_after_fork() -> None:
    global _JOBS, _DEFAULT_LOCK  # locks another thread may have held at the fork
    _JOBS = threading.Lock()
    _DEFAULT_LOCK = threading.Lock()
    for pool in list(_POOLS):
        pool._forget_threads()


if hasattr(os, "register_at_fork"):  # POSIX: nothing forks elsewhere
    os.register_at_fork(after_in_child=_forget_threads_after_fork)


def default_pool() -> WorkerPool:
    """The pool shared by every session and tracker not given one of its own."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = WorkerPool()
    return _DEFAULT

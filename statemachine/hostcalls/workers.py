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
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
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
    """One host call: its future, and when it started (``None`` while it waits)."""

    __slots__ = ("abandoned", "args", "fn", "future", "key", "started_at")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], key: object) -> None:
        self.fn = fn
        self.args = args
        self.key = key
        self.future: Future[Any] = Future()
        self.started_at: float | None = None
        self.abandoned = False

    def remaining(self, timeout: float) -> float | None:
        """Seconds left of ``timeout`` since the call started; None while it still waits."""
        started = self.started_at
        if started is None:
            return None
        return timeout - (time.monotonic() - started)


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
        self._ready = threading.Condition(threading.Lock())
        self._pending: deque[Job] = deque()
        self._workers = 0
        self._idle = 0
        self._hung = 0
        self._hung_by: Counter[object] = Counter()

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
        against (by default ``callable_key(fn)``).
        """
        job = Job(fn, args, callable_key(fn) if key is None else key)
        with self._ready:
            if self._refuses(job.key):
                return None
            self._pending.append(job)
            if self._idle == 0 and self._may_start():
                self._start()
            else:
                self._ready.notify()
        return job

    def abandon(self, job: Job) -> None:
        """The caller stopped waiting; a call still running now holds a hung thread."""
        refused: list[Job] = []
        with self._ready:
            if job.abandoned or job.future.done():
                return
            job.abandoned = True
            if job.started_at is None:  # never started: just drop it
                with contextlib.suppress(ValueError):
                    self._pending.remove(job)
                job.future.cancel()
                return
            self._hung += 1
            self._hung_by[job.key] += 1
            kept: deque[Job] = deque()
            for waiting in self._pending:
                (refused if self._refuses(waiting.key) else kept).append(waiting)
            self._pending = kept
            # The hung thread no longer counts as live: a replacement takes the waiting calls.
            for _ in range(min(len(kept), self.max_threads)):
                if self._idle > 0 or not self._may_start():
                    break
                self._start()
        for waiting in refused:
            waiting.future.set_exception(WorkersExhausted())

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

    def _work(self) -> None:
        ready = self._ready
        while True:
            with ready:
                while not self._pending:
                    self._idle += 1
                    woke = ready.wait(self.idle_timeout)
                    self._idle -= 1
                    if not woke and not self._pending:
                        self._workers -= 1
                        return
                job = self._pending.popleft()
                job.started_at = time.monotonic()
            if job.future.set_running_or_notify_cancel():
                try:
                    job.future.set_result(job.fn(*job.args))
                except BaseException as error:  # noqa: BLE001 - handed to whoever waits
                    job.future.set_exception(error)
            job.fn = job.args = None  # type: ignore[assignment]  # drop references
            if job.abandoned:
                with ready:
                    self._hung -= 1
                    self._hung_by[job.key] -= 1
                    if self._hung_by[job.key] <= 0:
                        del self._hung_by[job.key]
                    if self._workers - self._hung > self.max_workers:
                        self._workers -= 1  # a replacement took this thread's place: leave
                        return


def _check_size(name: str, value: object, low: int) -> None:
    if type(value) is not int or not low <= value <= MAX_THREADS:
        raise ValueError(f"{name} must be an integer from {low} to {MAX_THREADS}, got {value!r}")


_DEFAULT: WorkerPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool() -> WorkerPool:
    """The pool shared by every session and tracker not given one of its own."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = WorkerPool()
    return _DEFAULT

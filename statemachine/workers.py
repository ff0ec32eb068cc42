"""Threads the library owns for plain (sync) host calls: bounded, reused, and fair.

Host code may hang. If plain providers and activators ran on the event loop's
default executor, hung calls would starve the application's own
``to_thread`` and DNS lookups; if each call had a thread of its own, hung
calls would pile up threads until the process cannot start any more. So host
calls run here instead, on at most ``max_workers`` threads that are reused:

- a call waits for a free worker when all are busy with calls still within
  their timeouts; that wait is *ours* and never counts against the host's
  timeout, which starts when the call does;
- a call past its timeout is *abandoned*: its flow moves on, and its worker
  counts as hung until the call returns (then it is reused);
- when every worker is hung, no worker can be expected back: a new call is
  refused at once, and calls waiting for a worker are refused too. The flow
  ends with ``FailureReason.WORKERS_EXHAUSTED`` (never the host's own reason),
  and service resumes by itself as soon as a hung call returns;
- a worker idle for ``idle_timeout`` seconds exits, so a burst leaves nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final

DEFAULT_MAX_WORKERS: Final = min(64, 8 * (os.cpu_count() or 1))
"""Plain host calls that may be inside the host at once, per process."""


class WorkersExhausted(Exception):
    """Every worker for plain host calls is held by a call that has not returned."""


class Job:
    """One host call: its future, and when it started (``None`` while it waits)."""

    __slots__ = ("abandoned", "args", "fn", "future", "started_at")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
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
        idle_timeout: float = 60.0,
        name: str = "secured-activation-host-call",
    ) -> None:
        if type(max_workers) is not int or not 1 <= max_workers <= 10_000:
            raise ValueError(f"max_workers must be an integer from 1 to 10000, got {max_workers!r}")
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self.name = name
        self._ready = threading.Condition(threading.Lock())
        self._pending: deque[Job] = deque()
        self._workers = 0
        self._idle = 0
        self._hung = 0

    def __repr__(self) -> str:
        return (
            f"WorkerPool(max_workers={self.max_workers}, workers={self._workers}, "
            f"hung={self._hung}, waiting={len(self._pending)})"
        )

    @property
    def hung(self) -> int:
        """Workers held by an abandoned call that has not returned yet."""
        return self._hung

    @property
    def workers(self) -> int:
        return self._workers

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job | None:
        """Queue ``fn(*args)`` for the next free worker; ``None`` if every worker is hung."""
        job = Job(fn, args)
        with self._ready:
            if self._hung >= self.max_workers:
                return None
            self._pending.append(job)
            if self._idle == 0 and self._workers < self.max_workers:
                self._workers += 1
                threading.Thread(target=self._work, name=self.name, daemon=True).start()
            else:
                self._ready.notify()
        return job

    def abandon(self, job: Job) -> None:
        """The caller stopped waiting; a call still running now holds a hung worker."""
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
            if self._hung >= self.max_workers:
                refused, self._pending = list(self._pending), deque()
            else:
                refused = []
        for waiting in refused:
            waiting.future.set_exception(WorkersExhausted())

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
            if job.abandoned:
                with ready:
                    self._hung -= 1
            job.fn = job.args = None  # type: ignore[assignment]  # drop references


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

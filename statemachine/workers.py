"""Threads the library owns for plain (sync) host calls: bounded, reused, never queued.

Host code may hang. If plain providers and activators ran on the event loop's
default executor, hung calls would starve the application's own
``to_thread`` and DNS lookups; if each call had a thread of its own, hung
calls would pile up threads until the process cannot start any more. So host
calls run here instead:

- a call goes to an idle worker, or to a new one while fewer than
  ``max_workers`` exist; it never waits in a queue, so a timeout measures the
  host's call and nothing of ours;
- when every worker is held by a call that has not returned, a new call is
  refused at once (``submit`` returns ``None``), and the flow ends with
  ``FailureReason.WORKERS_EXHAUSTED``, never with the host's own reason;
- a worker whose call finally returns is reused; one idle for
  ``idle_timeout`` seconds exits, so a burst leaves nothing behind.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final

DEFAULT_MAX_WORKERS: Final = min(64, 8 * (os.cpu_count() or 1))
"""Enough for every flow waiting on a plain host call at once on a small machine."""

_Job = tuple[Callable[..., Any], tuple[Any, ...], "Future[Any]"]


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
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Job]] = []
        self._workers = 0

    def __repr__(self) -> str:
        return (
            f"WorkerPool(max_workers={self.max_workers}, workers={self._workers}, "
            f"idle={len(self._idle)})"
        )

    @property
    def busy(self) -> int:
        """Workers inside a host call right now (hung ones included)."""
        with self._lock:
            return self._workers - len(self._idle)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any] | None:
        """Start ``fn(*args)`` now on a worker; ``None`` if every worker is busy."""
        future: Future[Any] = Future()
        with self._lock:
            if self._idle:
                inbox = self._idle.pop()
            elif self._workers < self.max_workers:
                self._workers += 1
                inbox = queue.SimpleQueue()
                threading.Thread(
                    target=self._work, args=(inbox,), name=self.name, daemon=True
                ).start()
            else:
                return None
        inbox.put((fn, args, future))
        return future

    def _work(self, inbox: queue.SimpleQueue[_Job]) -> None:
        while True:
            try:
                fn, args, future = inbox.get(timeout=self.idle_timeout)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # not handed a job meanwhile: leave
                        self._idle.remove(inbox)
                        self._workers -= 1
                        return
                continue
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as error:  # noqa: BLE001 - handed to whoever waits
                    future.set_exception(error)
            del fn, args, future  # drop references before idling
            with self._lock:
                self._idle.append(inbox)


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

"""The embedded default store: one process, a TTL per key, a bound on entries."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Final

from statemachine.stores.base import StoreError, Versioned

DEFAULT_MAX_ENTRIES: Final = 100_000


class MemoryStore:
    """A dict with versions, expiry and a size bound, safe across threads.

    When the bound is reached (after dropping expired entries) a write for a
    *new* key is refused with ``StoreError`` rather than evicting a live
    visitor: a visitor dropped mid-flow could be handed a second flow, so the
    tracker answers the newcomer with the policy instead. Keys already present
    are always writable. Values are kept as the same JSON text a shared store
    would hold, so what a test sees here is what Redis would hold.
    """

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if type(max_entries) is not int or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (version, data, expires_at); ordered by last write, so the oldest expire first
        self._items: OrderedDict[str, tuple[int, str, float]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._items)

    def __repr__(self) -> str:
        return f"MemoryStore(entries={len(self._items)}, max_entries={self.max_entries})"

    def now(self) -> float:
        """The store's clock: this process's wall clock (one process, one clock)."""
        return time.time()

    def load(self, key: str) -> Versioned | None:
        with self._lock:
            return self._get(key, self._clock())

    def compare_and_set(
        self, key: str, expected: int, data: str, ttl: float, *, now: float | None = None
    ) -> tuple[bool, Versioned | None]:
        # ``now`` (when the write was decided) is on ``now()``'s clock, this process's own.
        with self._lock:
            now = self._clock()
            current = self._get(key, now)
            if (0 if current is None else current.version) != expected:
                return False, current
            if current is None:
                self._purge(now)
                if len(self._items) >= self.max_entries:
                    raise StoreError(
                        f"memory store full ({self.max_entries} visitors); raise max_entries"
                    )
            version = expected + 1
            self._items[key] = (version, data, now + ttl)
            self._items.move_to_end(key)
            return True, Versioned(version, data)

    def keys(self) -> Iterator[str]:
        """The live keys, oldest write first (a copy: safe while others write)."""
        with self._lock:
            self._purge(self._clock())
            return iter(list(self._items))

    async def akeys(self, limit: int = 1_000) -> list[str]:
        return list(self.keys())[-limit:]

    async def aload(self, key: str) -> Versioned | None:
        return self.load(key)

    async def acompare_and_set(
        self, key: str, expected: int, data: str, ttl: float, *, now: float | None = None
    ) -> tuple[bool, Versioned | None]:
        return self.compare_and_set(key, expected, data, ttl, now=now)

    def _get(self, key: str, now: float) -> Versioned | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[2] <= now:
            del self._items[key]
            return None
        return Versioned(item[0], item[1])

    def _purge(self, now: float) -> None:
        items = self._items
        while items:
            key, (_, _, expires_at) = next(iter(items.items()))
            if expires_at > now:
                break
            del items[key]

"""The embedded default store: one process, a TTL per key, a bound on entries."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Final

from statemachine.signals import logs
from statemachine.stores.base import StoreError, Versioned

DEFAULT_MAX_ENTRIES: Final = 100_000

EVICTION_LOG_INTERVAL: Final = 10.0
"""Seconds between two log lines about dropped visitors: one line per burst, not per request."""


_Entry = tuple[int, str, float] | tuple[int, str, float, float]
"""A stored visitor: version, data, expiry (and, in flight, until when it flies)."""


class MemoryStore:
    """A dict with versions, expiry and a size bound, safe across threads.

    When the bound is reached (after dropping expired entries) a write for a
    *new* key makes room by dropping settled visitors, least recently
    changed first. A visitor with a flow in flight (the writer says so with
    ``in_flight_for``) is never dropped: dropped mid-flow, it could be handed
    a second flow. Only when every entry is in flight is the newcomer
    refused with ``StoreError`` (and the tracker answers with the policy).
    Keys already present are always writable.

    ``evicted`` counts the visitors dropped to make room and ``refused`` the
    newcomers turned away (``ActivationMetrics`` exports both); a burst of
    drops is logged once per ``EVICTION_LOG_INTERVAL`` seconds. Values are
    kept as the same JSON text a shared store would hold, so what a test
    sees here is what Redis would hold.
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
        self.evicted = 0
        self.refused = 0
        self._clock = clock
        self._lock = threading.Lock()
        # Two lists, each ordered by last write (oldest first, so the oldest expire first):
        # settled visitors, key -> (version, data, expires_at), which may be dropped for room;
        # visitors in flight, key -> (version, data, expires_at, in_flight_until), which may not.
        self._settled: OrderedDict[str, tuple[int, str, float]] = OrderedDict()
        self._flying: OrderedDict[str, tuple[int, str, float, float]] = OrderedDict()
        self._unlogged = 0  # visitors dropped since the last log line
        self._logged_at = -EVICTION_LOG_INTERVAL
        # Versions are drawn from one counter for the whole store, never per key: a visitor
        # that expired or was dropped and is made again must not go through the versions it
        # had, or a tracker holding the version it last wrote there (its hint) would find it
        # matching and write a step decided on the old visitor over the new one.
        self._last_version = 0

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._settled) + len(self._flying)

    def __repr__(self) -> str:
        entries = len(self._settled) + len(self._flying)
        return f"MemoryStore(entries={entries}, max_entries={self.max_entries})"

    now: Final = staticmethod(time.time)
    """The store's clock: this process's wall clock (one process, one clock). The function
    itself, not a method calling it: a tracker reads it several times per step."""

    def load(self, key: str) -> Versioned | None:
        with self._lock:
            return self._get(key, self._clock())

    def compare_and_set(
        self,
        key: str,
        expected: int,
        data: str,
        ttl: float,
        *,
        now: float | None = None,
        in_flight_for: float = 0.0,
    ) -> tuple[bool, Versioned | None]:
        # ``now`` (when the write was decided) is on ``now()``'s clock, this process's own;
        # expiry and flights are judged on the store's monotonic clock.
        report = 0
        with self._lock:
            now = self._clock()
            settled, flying = self._settled, self._flying
            live = self._live(key, now)  # no Versioned built: a successful write returns none
            if (0 if live is None else live[0][0]) != expected:
                return False, None if live is None else Versioned(live[0][0], live[0][1])
            if live is None:
                self._purge(now)
                if len(settled) + len(flying) >= self.max_entries:
                    report = self._make_room(now)
            else:
                del live[1][key]
            version = self._last_version = self._last_version + 1
            if in_flight_for > 0:
                flying[key] = (version, data, now + ttl, now + in_flight_for)
            else:
                settled[key] = (version, data, now + ttl)
        if report:
            logs.emit(
                logs.PROXY.warning,
                logs.STORE_EVICTED,
                dropped=report,
                dropped_total=self.evicted,
                max_entries=self.max_entries,
            )
        return True, Versioned(version, data)

    def keys(self) -> Iterator[str]:
        """The live keys, oldest write first (a copy: safe while others write)."""
        with self._lock:
            self._purge(self._clock())
            items = [*self._settled.items(), *self._flying.items()]
        items.sort(key=lambda item: item[1][2])  # expiry follows the write for one TTL
        return iter([key for key, _ in items])

    async def akeys(self, limit: int = 1_000) -> list[str]:
        return list(self.keys())[-limit:]

    async def aload(self, key: str) -> Versioned | None:
        return self.load(key)

    async def acompare_and_set(
        self,
        key: str,
        expected: int,
        data: str,
        ttl: float,
        *,
        now: float | None = None,
        in_flight_for: float = 0.0,
    ) -> tuple[bool, Versioned | None]:
        return self.compare_and_set(key, expected, data, ttl, now=now, in_flight_for=in_flight_for)

    def _make_room(self, now: float) -> int:
        """Drop one settled visitor for a newcomer; returns how many drops to log now (or 0).

        A visitor whose flow outlived what its writer announced is settled by
        now (the tracker lets such a flow go on its next request): the oldest
        of those may go too. Nothing else may.
        """
        if self._settled:
            self._settled.popitem(last=False)
        else:
            oldest = next(iter(self._flying.values()), None)
            if oldest is None or oldest[3] > now:
                self.refused += 1
                raise StoreError(
                    f"memory store full ({self.max_entries} visitors, every one in flight); "
                    "raise max_entries"
                )
            self._flying.popitem(last=False)
        self.evicted += 1
        self._unlogged += 1
        if now - self._logged_at < EVICTION_LOG_INTERVAL:
            return 0
        self._logged_at = now
        report, self._unlogged = self._unlogged, 0
        return report

    def _get(self, key: str, now: float) -> Versioned | None:
        live = self._live(key, now)
        return None if live is None else Versioned(live[0][0], live[0][1])

    def _live(self, key: str, now: float) -> tuple[_Entry, dict[str, Any]] | None:
        """``key``'s entry and the table holding it, or None; an expired entry is dropped."""
        held: dict[str, Any] = self._settled
        entry: _Entry | None = held.get(key)
        if entry is None:
            held = self._flying
            entry = held.get(key)
            if entry is None:
                return None
        if entry[2] <= now:
            del held[key]
            return None
        return entry, held

    def _purge(self, now: float) -> None:
        settled, flying = self._settled, self._flying
        while settled:
            key, (_, _, expires_at) = next(iter(settled.items()))
            if expires_at > now:
                break
            del settled[key]
        while flying:
            key, (_, _, expires_at, _) = next(iter(flying.items()))
            if expires_at > now:
                break
            del flying[key]

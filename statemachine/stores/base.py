"""The store protocol the tracker writes through.

Every operation touches one key and nothing else, so a store can be a Redis
Cluster as well as a dict. Writes are compare-and-set on a per-key version:
a tracker loads a visitor, takes one step of the machine, and writes back only
if nobody wrote in between; otherwise it gets the newer value and takes its
step again from there. That is what keeps two workers from both moving one
visitor.

A store that has a clock of its own offers ``now()`` (epoch seconds, no round
trip) and accepts ``now=`` on a write: the time the write was decided at. It
refuses (as a conflict) a write decided on a clock too far from its own, so
leases are judged on one clock however many machines share the store.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class StoreError(Exception):
    """The store could not answer (down, too slow, full, or too contended).

    Carries a one-line message and never a visitor's data. The tracker turns
    it into the policy's answer; nothing was written.
    """


class DamagedRecord(StoreError):
    """A stored visitor that cannot be read (damaged, or written by an unknown format).

    Token requests and reports get the policy's answer, as for any store error;
    a logout overwrites the record, which repairs it.
    """


class Versioned(NamedTuple):
    """A stored snapshot (JSON text) and its version; version 0 means absent.

    A version identifies one write: the Redis store draws a random one per
    write, so a version can never be matched by another writer's write (after
    a failover lost one, say); only "equal or not" means anything.
    """

    version: int
    data: str


class Store(Protocol):
    """The blocking face, used by ``ActivationTracker``."""

    def load(self, key: str) -> Versioned | None:
        """The current value, or ``None`` if the key is absent (or expired)."""
        ...

    def compare_and_set(
        self, key: str, expected: int, data: str, ttl: float, *, in_flight_for: float = 0.0
    ) -> tuple[bool, Versioned | None]:
        """Write ``data`` if the key's version is ``expected`` (0: absent).

        Returns ``(True, new)`` on success, or ``(False, current)`` with what is
        there now, so a conflict costs no extra read. A write retried after a
        timeout that finds itself already written reports success.

        ``in_flight_for`` is how many more seconds the visitor has a flow in
        flight (0: settled). A store that makes room by dropping visitors
        must drop settled ones only: a visitor dropped mid-flow could be
        handed a second flow. A store that never drops (Redis with
        ``noeviction``) ignores it.
        """
        ...


class AsyncStore(Protocol):
    """The asyncio face, used by ``AsyncActivationTracker``: the same operations."""

    async def aload(self, key: str) -> Versioned | None: ...

    async def acompare_and_set(
        self, key: str, expected: int, data: str, ttl: float, *, in_flight_for: float = 0.0
    ) -> tuple[bool, Versioned | None]: ...

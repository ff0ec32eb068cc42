"""Where tracked visitors live between requests: versioned snapshots, compare-and-set writes.

``MemoryStore`` is the embedded default (one process). ``RedisStore`` (extra
``[redis]``) is shared by every worker of every machine; it is imported
lazily so that the engine does not need redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statemachine.stores.base import AsyncStore, DamagedRecord, Store, StoreError, Versioned
from statemachine.stores.memory import MemoryStore

if TYPE_CHECKING:
    from statemachine.stores.redis import RedisStore

__all__ = [
    "AsyncStore",
    "DamagedRecord",
    "MemoryStore",
    "RedisStore",
    "Store",
    "StoreError",
    "Versioned",
]


def __getattr__(name: str) -> Any:
    if name == "RedisStore":
        from statemachine.stores.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

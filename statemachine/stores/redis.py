"""The shared store: Redis, through redis-py's blocking and asyncio clients.

Each visitor is one hash ``{prefix}{visitor}`` with a version ``v`` and the
snapshot ``d``. A conditional write is one Lua script, run atomically by Redis
in one round trip (as redis-py's own ``Lock`` does its check-and-set); a read
is one ``HMGET``. Every command names a single key, so a Redis Cluster works
unchanged. Keys expire with the platform session's lifetime.

Every failure of the client (refused, reset, timed out, an error reply) is a
``StoreError`` with a one-line message: a store that is down costs at most the
client's socket timeouts, never a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from statemachine.stores.base import StoreError, Versioned

if TYPE_CHECKING:
    import redis as redis_sync
    import redis.asyncio as redis_async

DEFAULT_PREFIX: Final = "secured-activation:visitor:"
DEFAULT_TIMEOUT: Final = 0.5
"""Seconds a command may take before the store counts as down (connect and reply)."""

_CAS: Final = """
local cur = redis.call('HMGET', KEYS[1], 'v', 'd')
local v = tonumber(cur[1]) or 0
if v ~= tonumber(ARGV[1]) then
  if v == 0 then return {0, 0} end
  return {0, v, cur[2]}
end
redis.call('HSET', KEYS[1], 'v', v + 1, 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, v + 1}
"""


def _missing_redis() -> StoreError:
    return StoreError(
        "RedisStore needs redis-py: pip install 'secured-activation[redis]' (or 'redis>=5')"
    )


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _fail(action: str, error: BaseException) -> StoreError:
    # The type and the client's one-line text; redis-py's messages hold no stored data.
    detail = str(error).splitlines()[0][:160] if str(error) else ""
    return StoreError(
        f"redis {action} failed: {type(error).__name__}{': ' if detail else ''}{detail}"
    )


class RedisStore:
    """A ``Store`` and an ``AsyncStore`` over Redis; pass either client, or both.

    ``RedisStore.from_url(url)`` builds both lazily with short timeouts and one
    quick retry, so a dead Redis answers within about a second.
    """

    def __init__(
        self,
        client: redis_sync.Redis | None = None,
        async_client: redis_async.Redis | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if client is None and async_client is None and url is None:
            raise ValueError("RedisStore needs a client, an async_client, or a url")
        self.prefix = prefix
        self._url = url
        self._timeout = timeout
        self._client = client
        self._async_client = async_client
        self._script: Any = None
        self._async_script: Any = None

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT
    ) -> RedisStore:
        try:
            import redis  # noqa: F401 - fail here, with the install hint, not on first use
        except ImportError:
            raise _missing_redis() from None
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"not a Redis URL: {str(url)[:80]!r} (expected redis://host:port/db)")
        return cls(prefix=prefix, url=url, timeout=timeout)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"

    # -- clients ---------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        return {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        }

    def client(self) -> redis_sync.Redis:
        if self._client is None:
            import redis

            assert self._url is not None, "RedisStore was given only an async client"
            self._client = redis.Redis.from_url(self._url, **self._options())
        return self._client

    def async_client(self) -> redis_async.Redis:
        if self._async_client is None:
            import redis.asyncio

            assert self._url is not None, "RedisStore was given only a blocking client"
            self._async_client = redis.asyncio.Redis.from_url(self._url, **self._options())
        return self._async_client

    # -- blocking --------------------------------------------------------
    def load(self, key: str) -> Versioned | None:
        try:
            version, data = self.client().hmget(self.prefix + key, ["v", "d"])
        except Exception as error:  # noqa: BLE001 - every client failure is a StoreError
            raise _fail("read", error) from None
        return _versioned(version, data)

    def compare_and_set(
        self,
        key: str,
        expected: int,
        data: str,
        ttl: float,
        *,
        in_flight_for: float = 0.0,  # noqa: ARG002
    ) -> tuple[bool, Versioned | None]:
        try:
            if self._script is None:
                self._script = self.client().register_script(_CAS)
            reply = self._script(keys=[self.prefix + key], args=_args(expected, data, ttl))
        except Exception as error:  # noqa: BLE001
            raise _fail("write", error) from None
        return _cas_result(reply, data)

    def keys(self, limit: int = 1_000) -> list[str]:
        """Up to ``limit`` visitor keys (SCAN, so Redis is never blocked)."""
        try:
            found = []
            for raw in self.client().scan_iter(match=self.prefix + "*", count=500):
                found.append(_text(raw)[len(self.prefix) :])
                if len(found) >= limit:
                    break
        except Exception as error:  # noqa: BLE001
            raise _fail("scan", error) from None
        return found

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- asyncio ---------------------------------------------------------
    async def aload(self, key: str) -> Versioned | None:
        try:
            version, data = await self.async_client().hmget(self.prefix + key, ["v", "d"])
        except Exception as error:  # noqa: BLE001
            raise _fail("read", error) from None
        return _versioned(version, data)

    async def acompare_and_set(
        self,
        key: str,
        expected: int,
        data: str,
        ttl: float,
        *,
        in_flight_for: float = 0.0,  # noqa: ARG002
    ) -> tuple[bool, Versioned | None]:
        try:
            if self._async_script is None:
                self._async_script = self.async_client().register_script(_CAS)
            reply = await self._async_script(
                keys=[self.prefix + key], args=_args(expected, data, ttl)
            )
        except Exception as error:  # noqa: BLE001
            raise _fail("write", error) from None
        return _cas_result(reply, data)

    async def akeys(self, limit: int = 1_000) -> list[str]:
        try:
            found = []
            async for raw in self.async_client().scan_iter(match=self.prefix + "*", count=500):
                found.append(_text(raw)[len(self.prefix) :])
                if len(found) >= limit:
                    break
        except Exception as error:  # noqa: BLE001
            raise _fail("scan", error) from None
        return found

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.aclose()


def _args(expected: int, data: str, ttl: float) -> list[Any]:
    return [expected, data, max(1, int(ttl * 1000))]


def _versioned(version: Any, data: Any) -> Versioned | None:
    if version is None or data is None:
        return None
    try:
        return Versioned(int(version), _text(data))
    except (TypeError, ValueError):
        raise StoreError("redis read failed: the stored version is not a number") from None


def _cas_result(reply: Any, data: str) -> tuple[bool, Versioned | None]:
    try:
        ok, version = int(reply[0]), int(reply[1])
        if ok:
            return True, Versioned(version, data)
        return False, None if version == 0 else Versioned(version, _text(reply[2]))
    except (TypeError, ValueError, IndexError):
        raise StoreError("redis write failed: unexpected reply from the script") from None

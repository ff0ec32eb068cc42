"""The shared store: Redis, through redis-py's blocking and asyncio clients.

Each visitor is one hash ``{prefix}{visitor}`` with a version ``v`` and the
snapshot ``d``. A read and a conditional write are each one Lua script, run
atomically by Redis in one round trip; every script names a single key, so a
Redis Cluster works unchanged. Keys expire with the platform session's
lifetime.

Three properties hold against a real deployment's faults:

- **The store's clock decides.** Every script also reads Redis ``TIME``, and
  the store keeps the offset between that clock and this machine's. A tracker
  judges leases on ``now()`` (this machine's clock plus that offset), and every
  write carries the time it was decided at: a write more than
  ``clock_tolerance`` seconds off Redis's own clock is refused as a conflict
  (the offset is corrected, the tracker takes its step again), so a worker
  whose clock runs ahead or behind cannot open a visitor twice.
- **Writes know themselves.** A version is a random write id drawn for each
  write (never a counter): a write retried after a timeout that finds its own
  id reports success, and a version brought back by a failover can never
  match another writer's write.
- **Bounded calls.** Every call ends within about ``4 x timeout`` (waiting for
  a pooled connection, connecting, the reply, one retry), also on clients a
  host passes in (an asyncio client under the store's own deadline; a
  blocking one lends its settings to connections the store opens with its
  own timeouts); a burst waits for a pooled connection instead of failing.

Every failure of the client (refused, reset, timed out, an error reply) is a
``StoreError`` with a one-line message, never a traceback.

The asyncio face runs its two scripts through a lean lane of its own
(``stores._lane``: one pipelined connection per event loop, commands packed
once, replies parsed by hiredis) wherever it can serve the URL (plain
``redis://`` and ``unix://``); everything else, and every other command,
goes through redis-py. The lane keeps the bounds above.
"""

from __future__ import annotations

import asyncio
import functools
import math
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import unquote

from statemachine.signals import logs
from statemachine.stores._lane import AsyncLane, BlockingLane, LaneSettings, Script
from statemachine.stores.base import DamagedRecord, StoreError, Versioned

if TYPE_CHECKING:
    import redis as redis_sync
    import redis.asyncio as redis_async

DEFAULT_PREFIX: Final = "secured-activation:visitor:"
DEFAULT_TIMEOUT: Final = 0.5
"""Seconds a command may take before the store counts as down (connect and reply)."""

DEFAULT_MAX_CONNECTIONS: Final = 128
"""Pooled connections per process to one Redis; a burst beyond waits (bounded) for one."""

UNBOUNDED_POOL: Final = 10_000
"""Cluster and Sentinel pools cannot wait in redis-py: they may open this many instead."""

CLOCK_TOLERANCE: Final = 2.0
"""Seconds a write's decision time may differ from Redis's clock before it is refused."""

CLOCK_EVENT: Final = "activation.store_clock"
UNSAFE_EVENT: Final = "activation.store_unsafe"
SAFE_EVICTION: Final = "noeviction"
"""The only ``maxmemory-policy`` under which Redis never drops a visitor in flight."""

SCHEMES: Final = ("redis://", "rediss://", "unix://", "redis+cluster://", "redis+sentinel://")

_LOAD: Final = """
local t = redis.call('TIME')
local cur = redis.call('HMGET', KEYS[1], 'v', 'd')
return {t[1], t[2], cur[1], cur[2]}
"""

# ARGV: expected version ('0': absent), data, ttl ms, this write's id, decision time ms ('': none),
# tolerance ms. Reply: {status, seconds, microseconds[, current version, current data]} where
# status 1 = written (or found already written by this very write), 0 = conflict, 2 = clock refused.
_CAS: Final = """
local t = redis.call('TIME')
local cur = redis.call('HMGET', KEYS[1], 'v', 'd')
local v = cur[1] or '0'
if v == ARGV[4] then return {1, t[1], t[2]} end
if v ~= ARGV[1] then return {0, t[1], t[2], v, cur[2]} end
if ARGV[5] ~= '' then
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if math.abs(now - tonumber(ARGV[5])) > tonumber(ARGV[6]) then
    return {2, t[1], t[2], v, cur[2]}
  end
end
redis.call('HSET', KEYS[1], 'v', ARGV[4], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, t[1], t[2]}
"""

_LOAD_SCRIPT: Final = Script(_LOAD)
_CAS_SCRIPT: Final = Script(_CAS)

_WRITE_ID_BITS: Final = 52
"""Random bits per write id: exact in a Lua number, collisions never expected."""


class Target(NamedTuple):
    """A parsed ``redis+cluster://`` or ``redis+sentinel://`` URL."""

    kind: str  # "cluster" | "sentinel"
    nodes: tuple[tuple[str, int], ...]
    service: str | None
    db: int
    username: str | None
    password: str | None


class KeyListing(NamedTuple):
    """Visitor keys found, and the shards that could not be listed (down or unreachable)."""

    keys: list[str]
    skipped: tuple[str, ...]


def _missing_redis() -> StoreError:
    return StoreError(
        "RedisStore needs redis-py: the [redis] extra, from your clone of secured-activation "
        "(pip install -e '.[redis]' there), or 'redis>=5'"
    )


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _fail(action: str, error: BaseException) -> StoreError:
    # The type and the client's one-line text; redis-py's messages hold no stored data.
    detail = str(error).splitlines()[0][:160] if str(error) else ""
    # A key of another type under the prefix holds no visitor: damaged (the inspector lists
    # it so), not a store that is down.
    failed = DamagedRecord if "WRONGTYPE" in detail else StoreError  # Redis 6 says ERR first
    return failed(f"redis {action} failed: {type(error).__name__}{': ' if detail else ''}{detail}")


def check_url(url: object) -> str:
    """The URL if it is one this store takes; ``ValueError`` naming the accepted forms."""
    if not isinstance(url, str) or not url.startswith(SCHEMES):
        raise ValueError(
            f"not a Redis URL: {str(url)[:80]!r} (expected redis://host:port/db, rediss://..., "
            "redis+cluster://host:port[,host:port...] or "
            "redis+sentinel://host:port[,host:port...]/service)"
        )
    if url.startswith(("redis+cluster://", "redis+sentinel://")):
        parse_target(url)
    return url


def parse_target(url: str) -> Target:
    """Read ``redis+cluster://[user:password@]h:p[,h:p...][/0]`` or
    ``redis+sentinel://[user:password@]h:p[,h:p...]/service[/db]``."""
    kind, _, rest = url.partition("://")
    kind = kind.removeprefix("redis+")
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    hosts, _, path = rest.partition("/")
    username = password = None
    if "@" in hosts:
        userinfo, _, hosts = hosts.rpartition("@")
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    default_port = 26379 if kind == "sentinel" else 6379
    nodes = tuple(_host_port(item, default_port, url) for item in hosts.split(",") if item)
    if not nodes:
        raise ValueError(f"{kind} URL names no host: {url[:80]!r}")
    parts = [unquote(p) for p in path.split("/") if p]
    service = None
    db = 0
    if kind == "sentinel":
        if not parts:
            raise ValueError(
                f"a Sentinel URL names its service: redis+sentinel://h:p/service ({url[:80]!r})"
            )
        service, parts = parts[0], parts[1:]
    if parts:
        if len(parts) > 1 or not (parts[0].isascii() and parts[0].isdigit()):
            raise ValueError(
                f"after the hosts, a Redis URL takes only a database number: {url[:80]!r}"
            )
        db = int(parts[0])
    if kind == "cluster" and db != 0:
        raise ValueError("a Redis Cluster has only database 0")
    return Target(kind, nodes, service, db, username, password)


def _host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    host, port = item, default_port
    if item.startswith("["):  # [IPv6]:port
        host, _, tail = item[1:].partition("]")
        if tail.startswith(":"):
            port = _port(tail[1:], url)
    elif ":" in item:
        host, _, text = item.rpartition(":")
        port = _port(text, url)
    if not host:
        raise ValueError(f"a host is empty in {url[:80]!r}")
    return host, port


def _port(text: str, url: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError(f"not a port: {text[:10]!r} in {url[:80]!r}")
    return int(text)


def check_prefix(prefix: object) -> str:
    """A key prefix; ``{`` and ``}`` are refused: they would pin every visitor to one slot."""
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("prefix must be a non-empty string")
    if "{" in prefix or "}" in prefix:
        raise ValueError(
            "prefix must not contain '{' or '}': in a Redis Cluster a hash tag would put "
            "every visitor on one node"
        )
    return prefix


class RedisStore:
    """A ``Store`` and an ``AsyncStore`` over Redis; pass either client, or both, or a URL.

    ``RedisStore.from_url(url)`` builds both lazily with short timeouts and one
    quick retry, so a dead Redis answers within about a second. ``clock`` is
    this machine's wall clock (the store corrects it by Redis's own).
    """

    def __init__(
        self,
        client: redis_sync.Redis | Any | None = None,
        async_client: redis_async.Redis | Any | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock_tolerance: float = CLOCK_TOLERANCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if client is None and async_client is None and url is None:
            raise ValueError("RedisStore needs a client, an async_client, or a url")
        if url is not None:
            check_url(url)
        if not isinstance(timeout, int | float) or not 0 < timeout <= 60:
            raise ValueError(f"timeout must be a number of seconds in (0, 60], got {timeout!r}")
        if type(max_connections) is not int or not 1 <= max_connections <= UNBOUNDED_POOL:
            raise ValueError(f"max_connections must be from 1 to {UNBOUNDED_POOL}")
        # Checked here, not at the first write: an infinite or NaN one would make every write
        # raise (no integer milliseconds), a negative or zero one refuse every write.
        if type(clock_tolerance) not in (int, float) or not 0 < clock_tolerance < math.inf:
            raise ValueError(
                f"clock_tolerance must be a positive, finite number of seconds, "
                f"got {str(clock_tolerance)[:40]!r}"
            )
        self.prefix = check_prefix(prefix)
        self.clock_tolerance = float(clock_tolerance)
        self._url = url
        self._timeout = float(timeout)
        self._deadline = 4 * self._timeout
        self._max_connections = max_connections
        self._local_clock = clock
        self._offset = 0.0
        self._warned = False
        self._first_use_done: asyncio.Future[None] | None = None  # the async first use, shared
        self.skipped_shards: tuple[str, ...] = ()
        """The shards the last listing could not reach (down or unreachable)."""
        self._async_client = async_client
        # The two scripts take the lean lanes where they serve the URL (see stores._lane);
        # a client the host passes in is used as given.
        lane = LaneSettings.from_url(url, self._timeout) if url is not None else None
        self._lane_settings = lane if async_client is None else None
        self._lane: AsyncLane | None = None
        self._lanes: dict[asyncio.AbstractEventLoop, AsyncLane] = {}
        self._blocking_lane = (
            BlockingLane(lane, max_connections) if lane is not None and client is None else None
        )
        # Where the scripts go, decided once: a lane, or redis-py behind the same ``run``.
        self._scripts: BlockingLane | _RedisPyScripts = self._blocking_lane or _RedisPyScripts(
            self.client
        )
        self._redis_py_scripts = _AsyncRedisPyScripts(self.async_client, self._deadline)
        bounded = (
            None
            if client is None
            else _bounded_sync(client, self._options(), self._timeout, max_connections)
        )
        # A pool the store built is the store's to close (redis-py's ``close()`` leaves a
        # pool it was handed open); a client used as given stays the host's, and so do the
        # Sentinel connections of a host's client (the store's copy shares its manager).
        self._owns_client = bounded is not client
        self._client = bounded
        self._owns_sentinels = client is None
        self._owns_async_client = async_client is None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> RedisStore:
        """A store for ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://h:p[,h:p]``
        or ``redis+sentinel://h:p[,h:p]/service`` (no connection is made yet)."""
        try:
            import redis  # noqa: F401 - fail here, with the install hint, not on first use
        except ImportError:
            raise _missing_redis() from None
        return cls(
            prefix=prefix, url=check_url(url), timeout=timeout, max_connections=max_connections
        )

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"

    # -- the store's clock --------------------------------------------------
    def now(self) -> float:
        """Redis's time as this machine estimates it (no round trip): epoch seconds."""
        return self._local_clock() + self._offset

    @property
    def clock_offset(self) -> float:
        """Seconds Redis's clock is ahead of this machine's, as last measured."""
        return self._offset

    def _saw(self, seconds: Any, micros: Any) -> None:
        try:
            remote = int(seconds) + int(micros) / 1e6
        except (TypeError, ValueError):
            return
        self._offset = remote - self._local_clock()

    # -- clients ---------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        return {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        }

    @property
    def kind(self) -> str:
        """``single``, ``cluster`` or ``sentinel``: what the URL (or client) points at."""
        if self._url is not None and self._url.startswith(
            ("redis+cluster://", "redis+sentinel://")
        ):
            return parse_target(self._url).kind
        client = self._client if self._client is not None else self._async_client
        if hasattr(client, "get_primaries"):
            return "cluster"
        # A Sentinel's ``master_for`` client (blocking or asyncio) names its service on its pool.
        pool = getattr(client, "connection_pool", None)
        return "sentinel" if hasattr(pool, "service_name") else "single"

    def client(self) -> redis_sync.Redis:
        if self._client is None:
            assert self._url is not None, "RedisStore was given only an async client"
            self._client = _build_sync(
                self._url, self._options(), self._timeout, self._max_connections
            )
            self._owns_client = True
        client: redis_sync.Redis = self._client
        return client

    def async_client(self) -> redis_async.Redis:
        if self._async_client is None:
            assert self._url is not None, "RedisStore was given only a blocking client"
            self._async_client = _build_async(
                self._url, self._options(), self._timeout, self._max_connections
            )
        client: redis_async.Redis = self._async_client
        return client

    # -- blocking --------------------------------------------------------
    def load(self, key: str) -> Versioned | None:
        self._first_use()
        try:
            reply = self._scripts.run(_LOAD_SCRIPT, self.prefix + key, ())
        except Exception as error:  # noqa: BLE001 - every client failure is a StoreError
            raise _fail("read", error) from None
        return self._loaded(reply)

    def compare_and_set(
        self,
        key: str,
        expected: int,
        data: str,
        ttl: float,
        *,
        now: float | None = None,
        in_flight_for: float = 0.0,  # noqa: ARG002 - Redis with noeviction never drops a visitor
    ) -> tuple[bool, Versioned | None]:
        self._first_use()
        write_id = _write_id()
        args = self._cas_args(expected, data, ttl, write_id, now)
        try:
            reply = self._scripts.run(_CAS_SCRIPT, self.prefix + key, args)
        except Exception as error:  # noqa: BLE001
            raise _fail("write", error) from None
        return self._written(reply, write_id, data)

    def keys(self, limit: int = 1_000) -> list[str]:
        """Up to ``limit`` visitor keys, from every shard that answers (SCAN: never blocking)."""
        return self.listing(limit).keys

    def listing(self, limit: int = 1_000) -> KeyListing:
        """Visitor keys from every primary (SCAN per shard); a shard that is down is skipped."""
        client = self.client()
        match = self.prefix + "*"
        found: list[str] = []
        skipped: list[str] = []
        for name, target in _shards(client):
            try:
                cursor: Any = 0
                while len(found) < limit:
                    cursor, batch = _scan_one(
                        client.scan(cursor, match=match, count=500, **target), name
                    )
                    found.extend(_text(raw)[len(self.prefix) :] for raw in batch)
                    if not cursor:
                        break
            except Exception as error:  # noqa: BLE001 - one shard down: list the others
                if not target:
                    raise _fail("scan", error) from None
                skipped.append(name)
        self.skipped_shards = tuple(skipped)
        return KeyListing(found[:limit], self.skipped_shards)

    def close(self) -> None:
        if self._blocking_lane is not None:
            self._blocking_lane.close()
        if self._client is not None and self._owns_client:
            self._client.close()
            pool = getattr(self._client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()
        if self._client is not None and self._owns_sentinels:
            for watcher in _sentinels_of(self._client):
                watcher.close()

    # -- asyncio ---------------------------------------------------------
    async def aload(self, key: str) -> Versioned | None:
        if not self._warned:
            await self._afirst_use()
        try:
            reply = await self._ascripts().run(_LOAD_SCRIPT, self.prefix + key, ())
        except Exception as error:  # noqa: BLE001
            raise _fail("read", error) from None
        return self._loaded(reply)

    async def acompare_and_set(
        self,
        key: str,
        expected: int,
        data: str,
        ttl: float,
        *,
        now: float | None = None,
        in_flight_for: float = 0.0,  # noqa: ARG002 - Redis with noeviction never drops a visitor
    ) -> tuple[bool, Versioned | None]:
        if not self._warned:
            await self._afirst_use()
        write_id = _write_id()
        args = self._cas_args(expected, data, ttl, write_id, now)
        try:
            reply = await self._ascripts().run(_CAS_SCRIPT, self.prefix + key, args)
        except Exception as error:  # noqa: BLE001
            raise _fail("write", error) from None
        return self._written(reply, write_id, data)

    def _ascripts(self) -> AsyncLane | _AsyncRedisPyScripts:
        """Where this event loop's script calls go: its lane, or redis-py's asyncio client."""
        return self._alane() if self._lane_settings is not None else self._redis_py_scripts

    def _alane(self) -> AsyncLane:
        """This event loop's lane (a store may serve several loops, one after another)."""
        loop = asyncio.get_running_loop()
        lane = self._lane
        if lane is None or lane.loop is not loop:
            lane = self._lanes.get(loop)
            if lane is None:
                assert self._lane_settings is not None
                live = {old: kept for old, kept in self._lanes.items() if not old.is_closed()}
                lane = live[loop] = AsyncLane(self._lane_settings, loop)
                self._lanes = live
            self._lane = lane
        return lane

    async def akeys(self, limit: int = 1_000) -> list[str]:
        return (await self.alisting(limit)).keys

    async def alisting(self, limit: int = 1_000) -> KeyListing:
        client = self.async_client()
        match = self.prefix + "*"
        found: list[str] = []
        skipped: list[str] = []
        for name, target in _shards(client):
            try:
                cursor: Any = 0
                while len(found) < limit:
                    async with asyncio.timeout(self._deadline):
                        reply = await client.scan(cursor, match=match, count=500, **target)
                    cursor, batch = _scan_one(reply, name)
                    found.extend(_text(raw)[len(self.prefix) :] for raw in batch)
                    if not cursor:
                        break
            except Exception as error:  # noqa: BLE001
                if not target:
                    raise _fail("scan", error) from None
                skipped.append(name)
        self.skipped_shards = tuple(skipped)
        return KeyListing(found[:limit], self.skipped_shards)

    async def aclose(self) -> None:
        lanes, self._lanes, self._lane = self._lanes, {}, None
        for lane in lanes.values():
            lane.close()
        if self._async_client is not None and self._owns_async_client:
            await self._async_client.aclose()
            for watcher in _sentinels_of(self._async_client):
                await watcher.aclose()

    # -- replies ---------------------------------------------------------
    def _first_use(self) -> None:
        if not self._warned:
            self._warned = True
            lane = self._blocking_lane  # a plain URL opens no redis-py connection at all
            self._warn_if_unsafe(_config_policy(self.client() if lane is None else lane))

    async def _afirst_use(self) -> None:
        """The eviction check, once; every call that comes meanwhile waits for it to end.

        Waiting matters for redis-py's asyncio ``RedisCluster``: the check is its
        first command, which also discovers the cluster, and commands sent
        while a fresh client is still settling its nodes may find their new
        connection closed under them (``'NoneType' object has no attribute
        'writelines'``; measured on redis-py 8.1 with a host's own client).
        A call on another event loop does not wait (it cannot await this loop's future).
        """
        loop = asyncio.get_running_loop()
        done = self._first_use_done
        if done is not None:
            if done.get_loop() is loop and not done.done():
                await asyncio.shield(done)
            return
        self._first_use_done = done = loop.create_future()
        try:
            if self._lane_settings is not None:
                policy = await _aconfig_policy(self._alane(), self._timeout)
            else:
                policy = await _aconfig_policy(self.async_client(), self._timeout)
            self._warn_if_unsafe(policy)
        finally:
            self._warned = True
            done.set_result(None)

    def _warn_if_unsafe(self, policy: str | None) -> None:
        """Once per store: an eviction policy that may drop a visitor in flight is logged."""
        if policy is not None and policy != SAFE_EVICTION:
            logs.emit(
                logs.PROXY.warning,
                UNSAFE_EVENT,
                maxmemory_policy=policy,
                advice="set maxmemory-policy noeviction (secured-activation check-store URL)",
            )

    def _cas_args(
        self, expected: int, data: str, ttl: float, write_id: int, now: float | None
    ) -> tuple[object, ...]:
        decided = "" if now is None else str(int(now * 1000))
        tolerance = int(self.clock_tolerance * 1000)
        return (expected, data, max(1, int(ttl * 1000)), write_id, decided, tolerance)

    def _loaded(self, reply: Any) -> Versioned | None:
        try:
            seconds, micros, version, data = reply
        except (TypeError, ValueError):
            raise StoreError("redis read failed: unexpected reply from the script") from None
        self._saw(seconds, micros)
        return _versioned(version, data)

    def _written(self, reply: Any, write_id: int, data: str) -> tuple[bool, Versioned | None]:
        try:
            status = int(reply[0])
            self._saw(reply[1], reply[2])
            if status == 1:
                return True, Versioned(write_id, data)
            current = _versioned(reply[3], reply[4] if len(reply) > 4 else None)
        except (TypeError, ValueError, IndexError):
            raise StoreError("redis write failed: unexpected reply from the script") from None
        if status == 2:
            logs.emit(
                logs.PROXY.warning,
                CLOCK_EVENT,
                offset=round(self._offset, 3),
                tolerance=self.clock_tolerance,
            )
        return False, current


def _config_policy(client: Any) -> str | None:
    """``maxmemory-policy``; None if CONFIG is not allowed (managed services) or Redis is down."""
    try:
        if isinstance(client, BlockingLane):
            return _policy_of(client.command("CONFIG", "GET", "maxmemory-policy"))
        return _policy_of(client.config_get("maxmemory-policy"))
    except Exception:  # noqa: BLE001 - a check, never a failure of the store
        return None


async def _aconfig_policy(client: Any, deadline: float) -> str | None:
    try:
        async with asyncio.timeout(deadline):
            if isinstance(client, AsyncLane):
                return _policy_of(await client.command("CONFIG", "GET", "maxmemory-policy"))
            return _policy_of(await client.config_get("maxmemory-policy"))
    except Exception:  # noqa: BLE001
        return None


def _policy_of(reply: Any) -> str | None:
    """The policy from CONFIG GET's reply (one server's, or a cluster's per node)."""
    if isinstance(reply, list):  # the raw reply (the lanes): name, value, name, value...
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    if isinstance(reply, dict):
        for key, value in reply.items():
            if _text(key) == "maxmemory-policy":
                return _text(value)
            if isinstance(value, dict):  # a cluster: {node: {...}}
                found = _policy_of(value)
                if found is not None:
                    return found
    return None


def _sentinels_of(client: Any) -> list[Any]:
    """The Sentinel connections behind a Sentinel-managed client (closed with it)."""
    pool = getattr(client, "connection_pool", None)
    manager = getattr(pool, "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()) or ())


def _write_id() -> int:
    return secrets.randbits(_WRITE_ID_BITS) or 1


def _versioned(version: Any, data: Any) -> Versioned | None:
    """What a hash holds: None when it has no version (absent), else its version and text.

    A version that is no write id of ours (not a number, not even UTF-8) is a
    ``DamagedRecord`` no logout can repair (no compare-and-set matches it).
    A snapshot that is missing beside a version, or is not UTF-8, is kept as
    text that reads as damaged (empty: a bad byte replaced inside a free-text
    field could read as valid): the
    tracker answers a ``DamagedRecord``, and a logout's compare-and-set on
    that version repairs it. Read as absent instead, the visitor could never
    be written again (every write conflicts with the version).
    """
    if version is None:
        return None
    # Only the canonical decimal a write of ours sends: the script compares versions as text.
    text = version.decode("latin-1") if isinstance(version, bytes) else str(version)
    if not (len(text) <= 20 and text.isascii() and text.isdigit() and text == str(int(text))):
        raise DamagedRecord("redis read failed: the stored version is not a number")
    number = int(text)
    if number == 0:
        return None
    if isinstance(data, bytes):
        try:
            return Versioned(number, data.decode("utf-8"))
        except UnicodeDecodeError:  # empty reads as damaged; replaced bytes might not
            return Versioned(number, "")
    return Versioned(number, "" if data is None else str(data))


def _run_script(client: Any, script: Script, key: str, args: Sequence[object]) -> Any:
    """EVALSHA, and EVAL when the node does not know the script (new node, after a failover)."""
    from redis.exceptions import NoScriptError

    try:
        return client.evalsha(script.sha, 1, key, *args)
    except NoScriptError:
        return client.eval(script.source, 1, key, *args)


async def _arun_script(client: Any, script: Script, key: str, args: Sequence[object]) -> Any:
    from redis.exceptions import NoScriptError

    try:
        return await client.evalsha(script.sha, 1, key, *args)
    except NoScriptError:
        return await client.eval(script.source, 1, key, *args)


class _RedisPyScripts:
    """redis-py's blocking client behind the lanes' ``run``: where no lane serves the URL."""

    __slots__ = ("_client",)

    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client  # the store's client(): built on first use

    def run(self, script: Script, key: str, args: tuple[object, ...]) -> Any:
        return _run_script(self._client(), script, key, args)


class _AsyncRedisPyScripts:
    """redis-py's asyncio client behind the lanes' ``run``, under the store's deadline."""

    __slots__ = ("_client", "_deadline")

    def __init__(self, client: Callable[[], Any], deadline: float) -> None:
        self._client, self._deadline = client, deadline

    async def run(self, script: Script, key: str, args: tuple[object, ...]) -> Any:
        async with asyncio.timeout(self._deadline):
            return await _arun_script(self._client(), script, key, args)


def _shards(client: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Where to SCAN: each primary of a cluster by name, or the one server."""
    primaries = getattr(client, "get_primaries", None)
    if primaries is None:
        yield "redis", {}
        return
    for node in primaries():
        yield str(node.name), {"target_nodes": node}


def _scan_one(reply: Any, name: str) -> tuple[Any, list[Any]]:
    cursor, batch = reply
    if isinstance(cursor, dict):  # a cluster client answers per node
        cursor = cursor.get(name, 0)
    return cursor, list(batch)


# -- building clients ----------------------------------------------------
def _build_sync(url: str, options: dict[str, Any], timeout: float, size: int) -> Any:
    import redis
    import redis.cluster
    import redis.sentinel

    if url.startswith("redis+cluster://"):
        target = parse_target(url)
        return redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
                for h, p in target.nodes
            ],
            username=target.username,
            password=target.password,
            require_full_coverage=False,
            connection_pool_class=functools.partial(
                redis.BlockingConnectionPool, timeout=timeout, max_connections=size
            ),
            **options,
        )
    if url.startswith("redis+sentinel://"):
        target = parse_target(url)
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes),
            sentinel_kwargs={k: v for k, v in options.items() if k != "retry"},
            **options,
        )
        assert target.service is not None
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            max_connections=UNBOUNDED_POOL,
        )
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=size, timeout=timeout, **options
    )
    return redis.Redis(connection_pool=pool)


def _build_async(url: str, options: dict[str, Any], timeout: float, size: int) -> Any:
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.sentinel

    if url.startswith("redis+cluster://"):
        target = parse_target(url)
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in target.nodes],
            username=target.username,
            password=target.password,
            require_full_coverage=False,
            max_connections=UNBOUNDED_POOL,
            **options,
        )
    if url.startswith("redis+sentinel://"):
        target = parse_target(url)
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes),
            sentinel_kwargs={k: v for k, v in options.items() if k != "retry"},
            **options,
        )
        assert target.service is not None
        return sentinel.master_for(
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            max_connections=UNBOUNDED_POOL,
        )
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=size, timeout=timeout, **options
    )
    return redis.asyncio.Redis.from_pool(pool)


_NOT_LENT: Final = frozenset(
    {
        "retry",
        "socket_timeout",
        "socket_connect_timeout",
        "redis_connect_func",
        "himport_registry",
        "maint_notifications_pool_handler",
        "orig_host_address",
        "orig_socket_timeout",
        "orig_socket_connect_timeout",
        "connection_pool_class",
        "max_connections",
        "host",
        "port",
    }
)
"""Settings of a host's client that belong to its own pool, or that the store sets itself."""


def _bounded_sync(client: Any, options: dict[str, Any], timeout: float, size: int) -> Any:
    """A blocking client with the host client's settings (address, auth, TLS, database, ...)
    but the store's timeouts, retry and waiting pool.

    redis-py has no per-call deadline on blocking clients, so rather than
    change the host's own client, the store opens its own connections with it
    as a template.
    """
    import redis
    import redis.cluster
    import redis.sentinel

    if isinstance(client, redis.cluster.RedisCluster):
        lent = _lent(client.nodes_manager.connection_kwargs)
        return redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(node.host, node.port)  # type: ignore[no-untyped-call]
                for node in client.get_nodes()  # type: ignore[no-untyped-call]
            ],
            require_full_coverage=False,
            connection_pool_class=functools.partial(
                redis.BlockingConnectionPool, timeout=timeout, max_connections=size
            ),
            **{**lent, **options},
        )
    pool = getattr(client, "connection_pool", None)
    if not isinstance(client, redis.Redis) or pool is None:
        return client  # not redis-py's: used as given
    kwargs = pool.connection_kwargs
    lent = {**_lent(kwargs), **options}
    if "host" in kwargs:
        lent.update(host=kwargs["host"], port=kwargs.get("port", 6379))
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        return redis.Redis(
            connection_pool=redis.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
                pool.service_name,
                pool.sentinel_manager,
                connection_class=pool.connection_class,
                max_connections=UNBOUNDED_POOL,
                **lent,
            )
        )
    return redis.Redis(
        connection_pool=redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
            connection_class=pool.connection_class, max_connections=size, timeout=timeout, **lent
        )
    )


def _lent(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in kwargs.items() if key not in _NOT_LENT}

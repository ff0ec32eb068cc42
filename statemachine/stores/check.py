"""``secured-activation check-store URL``: is this Redis deployment safe to hold visitors?

One line per check, and a non-zero exit on anything unsafe:

- **reachable**: the store answers within the timeout;
- **eviction**: ``maxmemory-policy`` is ``noeviction`` on every primary (any other policy
  may drop a visitor in flight, and a second tab would then get a token);
- **clock**: the offset between this machine's clock and each primary's, and how far the
  primaries are apart (leases are judged on the store's clock: primaries further apart
  than the store's clock tolerance can let a promoted replica judge a lease differently);
- **topology**: a single server is a primary; a cluster is ``ok`` and every primary has a
  replica; a Sentinel service has a primary and at least one replica;
- **tls**: whether the connection is encrypted (informational);
- **script**: a conditional write and a read of a probe key (expires in seconds) succeed.

Nothing a visitor wrote is read; the probe key carries a random name under the prefix.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple, TextIO

from statemachine.stores.base import StoreError
from statemachine.stores.redis import (
    CLOCK_TOLERANCE,
    DEFAULT_PREFIX,
    SAFE_EVICTION,
    RedisStore,
    check_url,
    parse_target,
)

OK: Final = "ok"
WARN: Final = "warn"
FAIL: Final = "FAIL"


class Check(NamedTuple):
    name: str
    status: str  # OK, WARN or FAIL
    detail: str

    def line(self) -> str:
        return f"{self.status:<4} {self.name:<10} {self.detail}"


def check_store(
    url: str,
    *,
    timeout: float = 1.0,
    prefix: str = DEFAULT_PREFIX,
    clock: Callable[[], float] = time.time,
) -> list[Check]:
    """Every check, in order; stops after ``reachable`` if the store does not answer."""
    url = check_url(url)
    store = RedisStore.from_url(url, prefix=prefix, timeout=timeout)
    kind = store.kind
    checks: list[Check] = []
    store._warned = True  # the eviction line below says it: no second, logged warning
    try:
        started = time.monotonic()
        try:
            # A Cluster or Sentinel client talks to the nodes as it is made: inside the check.
            client: Any = store.client()
            client.ping()
        except Exception as error:  # noqa: BLE001 - reported, one line
            checks.append(Check("reachable", FAIL, f"{kind}: {_one_line(error)}"))
            return checks
        took = (time.monotonic() - started) * 1000
        checks.append(Check("reachable", OK, f"{kind}, answered in {took:.1f} ms"))
        nodes = _primaries(client)
        checks.append(_eviction(nodes))
        checks.append(_clock(nodes, clock))
        checks.append(_topology(kind, client, url))
        tls = url.startswith("rediss://") or _uses_tls(client)
        checks.append(Check("tls", OK, "encrypted (TLS)" if tls else "not encrypted (plain TCP)"))
        checks.append(_script(store))
    finally:
        store.close()
    return checks


def main(url: str, out: TextIO, *, timeout: float = 1.0) -> int:
    """Print one line per check; 0 if nothing is unsafe, 1 otherwise."""
    checks = check_store(url, timeout=timeout)
    for check in checks:
        print(check.line(), file=out)
    failed = [c.name for c in checks if c.status == FAIL]
    print(f"{'unsafe: ' + ', '.join(failed) if failed else 'safe'}", file=out)
    return 1 if failed else 0


def _one_line(error: BaseException) -> str:
    text = str(error).splitlines()[0][:160] if str(error) else ""
    return f"{type(error).__name__}{': ' if text else ''}{text}"


def _primaries(client: Any) -> list[tuple[str, Any]]:
    """(name, a client for that one primary): each cluster primary, or the one server."""
    primaries = getattr(client, "get_primaries", None)
    if primaries is None:
        return [("redis", client)]
    return [(str(node.name), node.redis_connection or client) for node in primaries()]


def _eviction(nodes: list[tuple[str, Any]]) -> Check:
    unsafe, unknown = [], []
    for name, node in nodes:
        try:
            reply = node.config_get("maxmemory-policy")
            policy = next(
                (_text(v) for k, v in dict(reply).items() if _text(k) == "maxmemory-policy"), None
            )
        except Exception:  # noqa: BLE001 - managed services may refuse CONFIG
            policy = None
        if policy is None:
            unknown.append(name)
        elif policy != SAFE_EVICTION:
            unsafe.append(f"{name}={policy}")
    if unsafe:
        return Check(
            "eviction",
            FAIL,
            f"maxmemory-policy {', '.join(unsafe)}: a visitor in flight may be evicted "
            f"(set maxmemory-policy {SAFE_EVICTION})",
        )
    if unknown:
        return Check("eviction", WARN, "maxmemory-policy unknown (CONFIG GET refused)")
    return Check("eviction", OK, f"maxmemory-policy {SAFE_EVICTION}")


def _clock(nodes: list[tuple[str, Any]], clock: Callable[[], float]) -> Check:
    offsets = []
    for _name, node in nodes:
        try:
            before = clock()
            seconds, micros = node.time()
            after = clock()
        except Exception as error:  # noqa: BLE001
            return Check("clock", WARN, f"TIME failed: {_one_line(error)}")
        offsets.append(int(seconds) + int(micros) / 1e6 - (before + after) / 2)
    worst = max(offsets, key=abs)
    spread = max(offsets) - min(offsets)
    detail = f"store clock {worst:+.3f} s from this machine's"
    if len(offsets) > 1:
        detail += f", primaries {spread:.3f} s apart"
    if spread > CLOCK_TOLERANCE:
        return Check(
            "clock", FAIL, f"{detail}: more than {CLOCK_TOLERANCE:g} s (run NTP on the nodes)"
        )
    if abs(worst) > CLOCK_TOLERANCE:
        return Check("clock", WARN, f"{detail} (leases use the store's; fix NTP here)")
    return Check("clock", OK, detail)


def _topology(kind: str, client: Any, url: str) -> Check:
    try:
        if kind == "cluster":
            state = str(client.cluster_info().get("cluster_state", "unknown"))
            flags = [str(node.get("flags", "")) for node in client.cluster_nodes().values()]
            primaries = sum("master" in f and "fail" not in f for f in flags)
            replicas = sum("slave" in f and "fail" not in f for f in flags)
            detail = f"cluster {state}: {primaries} primaries, {replicas} replicas"
            if state != "ok":
                return Check("topology", FAIL, detail)
            if replicas < primaries:
                return Check("topology", WARN, f"{detail} (a primary without a replica)")
            return Check("topology", OK, detail)
        if kind == "sentinel":
            target = parse_target(url)
            assert target.service is not None
            manager = client.connection_pool.sentinel_manager
            master = manager.discover_master(target.service)
            replicas = manager.discover_slaves(target.service)
            detail = (
                f"sentinel service {target.service!r}: primary {master[0]}:{master[1]}, "
                f"{len(replicas)} replica(s), {len(manager.sentinels)} sentinel(s) listed"
            )
            return Check("topology", OK if replicas else WARN, detail)
        role = client.info("replication").get("role")
        if role != "master":
            return Check("topology", FAIL, f"single server, role {role}: writes need a primary")
        return Check("topology", OK, "single server, role master (no replica failover)")
    except Exception as error:  # noqa: BLE001
        return Check("topology", FAIL, _one_line(error))


def _uses_tls(client: Any) -> bool:
    """An SSL connection class (``rediss://``), or ``ssl`` set on the connections."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {}) or {}
    name = getattr(getattr(pool, "connection_class", None), "__name__", "")
    return bool(kwargs.get("ssl")) or "SSL" in name


def _script(store: RedisStore) -> Check:
    probe = f"check:{secrets.token_hex(8)}"
    try:
        ok, written = store.compare_and_set(probe, 0, "{}", 10.0, now=store.now())
        if not ok:  # the first write taught the store Redis's clock: decide again on it
            ok, written = store.compare_and_set(probe, 0, "{}", 10.0, now=store.now())
        loaded = store.load(probe)
    except StoreError as error:
        return Check("script", FAIL, str(error))
    if not ok or written is None or loaded != written:
        return Check("script", FAIL, "a conditional write did not read back")
    return Check("script", OK, "conditional write and read (Lua, TIME) work; probe expires in 10 s")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)

"""A lean asyncio path to one Redis server for the store's two scripts.

A tracked token request is two script calls, and through redis-py's asyncio
client each cost 60 to 90 µs of Python beyond the round trip itself on our
measurements (a pool checkout under an ``asyncio.Condition``, command
packing argument by argument, a stream reader, a ``wait_for`` per read, the
store's own ``asyncio.timeout``): more than the tracker's whole step. The
lane is what those two calls need and nothing else:

- **one connection per event loop, pipelined.** Every call sends its command
  and waits for its reply in order (Redis answers a connection's commands in
  the order sent), so concurrent requests share the connection without a
  pool, a lock or a queue of our own. A command is written at once when
  nothing is in flight; while replies are due, the commands sent during one
  loop turn are written together at its end (one system call for many: on a
  busy worker, a send costs more than the Python around it);
- **commands packed once.** ``EVALSHA <sha> 1`` is a constant prefix per
  script; only the key and the arguments are encoded per call;
- **replies parsed by hiredis** (a dependency of the ``redis`` extra), fed
  from the protocol's ``data_received`` straight into the waiting future.

The guarantees are redis-py's, as the store configures it: a connect and a
reply are each bounded by ``timeout``; a call that fails on a lost
connection or a timeout is tried once more on a fresh connection (a write
retried this way finds its own write id, see ``stores.redis``), so every
call ends within about ``4 x timeout``; a connection that timed out is
closed, never reused with a reply still due. An error reply is raised as
``ReplyError``; ``NOSCRIPT`` (a new node, a restart) is answered by sending
the script itself.

The lane serves plain ``redis://`` and ``unix://`` URLs. TLS, Cluster,
Sentinel, URL options beyond the address, credentials and database, and
clients a host passes in keep redis-py's path (``LaneSettings.from_url``
says which).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import os
import socket
import threading
from typing import Any, Final, NamedTuple

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis comes with the redis extra
    hiredis = None  # type: ignore[assignment]

_PLAIN_KEYS: Final = frozenset({"host", "port", "db", "username", "password", "path"})
"""What a URL may set for the lane to serve it; anything else is left to redis-py."""


class ReplyError(Exception):
    """Redis answered a command with an error reply (its first line is the message)."""


class LaneSettings(NamedTuple):
    """Where the lane connects, and how long a connect or a reply may take."""

    host: str | None
    port: int
    path: str | None  # a unix socket
    db: int
    username: str | None
    password: str | None
    timeout: float

    @classmethod
    def from_url(cls, url: str, timeout: float) -> LaneSettings | None:
        """Settings for ``url``, or None if the lane does not serve it (redis-py does)."""
        if hiredis is None or not url.startswith(("redis://", "unix://")):
            return None
        from redis.connection import UnixDomainSocketConnection, parse_url

        try:
            parsed = parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError:
            return None
        connection_class = parsed.pop("connection_class", None)
        if connection_class not in (None, UnixDomainSocketConnection):
            return None
        if not set(parsed) <= _PLAIN_KEYS:
            return None
        return cls(
            host=parsed.get("host", "localhost") if "path" not in parsed else None,
            port=int(parsed.get("port", 6379)),
            path=parsed.get("path"),
            db=int(parsed.get("db", 0) or 0),
            username=parsed.get("username"),
            password=parsed.get("password"),
            timeout=timeout,
        )


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _bulks(parts: tuple[object, ...]) -> list[bytes]:
    """Each part as a RESP bulk string: text as UTF-8, numbers in decimal."""
    out = []
    for part in parts:
        kind = type(part)
        value = (
            part.encode("utf-8")  # type: ignore[attr-defined]
            if kind is str
            else part
            if kind is bytes
            else str(part).encode("ascii")
        )
        out.append(b"$%d\r\n%s\r\n" % (len(value), value))  # type: ignore[arg-type]
    return out


def pack(*parts: object) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"".join([b"*%d\r\n" % len(parts), *_bulks(parts)])


class Script:
    """A Lua script with its ``EVALSHA`` prefix packed once."""

    __slots__ = ("_eval_head", "_head_by_count", "sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()
        self._head_by_count: dict[int, bytes] = {}
        self._eval_head = _bulk(b"EVAL") + _bulk(source.encode("utf-8"))

    def evalsha(self, key: str, args: tuple[object, ...]) -> bytes:
        count = len(args)
        head = self._head_by_count.get(count)
        if head is None:
            head = b"*%d\r\n" % (4 + count) + _bulk(b"EVALSHA") + _bulk(self.sha.encode())
            self._head_by_count[count] = head
        return b"".join([head, _ONE, *_bulks((key, *args))])

    def eval(self, key: str, args: tuple[object, ...]) -> bytes:
        head = b"*%d\r\n" % (4 + len(args)) + self._eval_head
        return b"".join([head, _ONE, *_bulks((key, *args))])


_ONE: Final = _bulk(b"1")


def _lacks_script(reply: Any) -> bool:
    """Redis answered ``EVALSHA`` with ``NOSCRIPT`` (a new node, a restart): send the script."""
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


def _checked(reply: Any) -> Any:
    """A reply, or the error reply raised."""
    if isinstance(reply, ReplyError):
        raise reply
    return reply


def _hello(settings: LaneSettings) -> list[bytes]:
    """What a new connection sends first: credentials, then the database."""
    commands: list[bytes] = []
    if settings.password is not None:
        credentials = [settings.username] if settings.username else []
        commands.append(pack("AUTH", *credentials, settings.password))
    if settings.db:
        commands.append(pack("SELECT", settings.db))
    return commands


_RETRIED: Final = (ConnectionError, TimeoutError, OSError)
"""Failures after which a call is tried once more, on a fresh connection."""


class _Connection(asyncio.Protocol):
    """One pipelined connection: replies resolve the waiting futures in the order sent.

    Every call must be answered within ``timeout`` of its send. One watchdog
    timer per connection keeps that bound, instead of a timer armed and
    cancelled per call (two of a token request's handful of loop callbacks,
    and a heap entry each): it is armed at the oldest pending call's deadline,
    and when it fires, it fails a call past its deadline (the connection is
    then closed, as a caller's own timeout closed it) or re-arms at the
    deadline of the oldest call still waiting. Calls are answered in the order
    sent with one timeout, so the oldest call always has the nearest deadline.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reader = hiredis.Reader(replyError=ReplyError)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()  # one per waiting call
        self.watchdog: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.corked: list[bytes] | None = None  # commands to write at the end of this loop turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                waiter = self.waiting.popleft()
                self.deadlines.popleft()
                if not waiter.done():  # a caller that timed out or was cancelled is skipped
                    waiter.set_result(reply)
                reply = reader.gets()
        except Exception as error:  # noqa: BLE001 - garbage, or a reply nobody asked for
            self.close(ConnectionError(f"unreadable reply from Redis ({type(error).__name__})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(exc or ConnectionError("Redis closed the connection"))

    def send(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """Write ``command`` (now, or at this loop turn's end); its reply is due within
        ``timeout`` (then the future fails with ``TimeoutError``)."""
        waiter: asyncio.Future[Any] = loop.create_future()
        if self.lost is not None or self.transport is None:
            waiter.set_exception(ConnectionError("the connection to Redis is closed"))
            return waiter
        waiting = self.waiting
        if waiting:  # replies are due: join the commands written together at this loop turn's end
            corked = self.corked
            if corked is None:
                self.corked = [command]
                loop.call_soon(self._uncork)
            else:
                corked.append(command)
        else:  # nothing in flight (one caller at a time): written at once, no added turn
            self.transport.write(command)
        waiting.append(waiter)
        deadline = loop.time() + self.timeout
        self.deadlines.append(deadline)
        if self.watchdog is None:
            self.watchdog = loop.call_at(deadline, self._watch, loop)
        return waiter

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the oldest call past its deadline, or wait for the oldest one still due."""
        self.watchdog = None
        if self.lost is not None:
            return
        now = loop.time()
        for waiter, deadline in zip(self.waiting, self.deadlines, strict=True):
            if waiter.done():  # its caller gave up: its reply is skipped when it comes
                continue
            if deadline > now:
                self.watchdog = loop.call_at(deadline, self._watch, loop)
                return
            timeout = self.timeout
            waiter.set_exception(TimeoutError(f"no reply from Redis within {timeout:g} s"))
            # The reply is still due on this connection: close it rather than read it later.
            self.close(TimeoutError("a reply timed out"))
            return

    def _uncork(self) -> None:
        """Write the commands sent during this loop turn in one go (one system call, not N)."""
        corked, self.corked = self.corked, None
        if corked and self.lost is None and self.transport is not None:
            self.transport.write(b"".join(corked))

    def close(self, error: BaseException) -> None:
        """Fail every call still waiting; the connection is never used again."""
        if self.lost is None:
            self.lost = error
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        waiting, self.waiting = self.waiting, collections.deque()
        self.deadlines = collections.deque()
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(ConnectionError(str(error) or type(error).__name__))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class AsyncLane:
    """The store's scripts on one event loop's connection (made on first use, remade on loss)."""

    def __init__(self, settings: LaneSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        # Once the store closed this lane, it opens nothing more: a call that was waiting
        # and retries would open a connection on a lane the store no longer knows, that no
        # later close() reaches (the store's next calls get a lane of their own).
        self._closed = False

    async def run(self, script: Script, key: str, args: tuple[object, ...]) -> Any:
        """``EVALSHA`` (``EVAL`` if Redis lacks the script); once more after a lost connection."""
        try:
            return await self._run_once(script, key, args)
        except _RETRIED:
            return await self._run_once(script, key, args)

    async def command(self, *parts: object) -> Any:
        """Any other command (the store's checks): its reply, or ``ReplyError``."""
        return _checked(await self._call(pack(*parts)))

    async def _run_once(self, script: Script, key: str, args: tuple[object, ...]) -> Any:
        """``EVALSHA``, then ``EVAL`` if Redis lacks the script (no coroutine of its own for
        the first send: this runs twice per token request)."""
        connection = self._connection
        if connection is None or connection.lost is not None:
            connection = await self._connect()
        reply = await connection.send(script.evalsha(key, args), self.loop)
        if _lacks_script(reply):
            reply = await self._call(script.eval(key, args))
        return _checked(reply)

    async def _call(self, command: bytes) -> Any:
        connection = self._connection
        if connection is None or connection.lost is not None:
            connection = await self._connect()
        return await connection.send(command, self.loop)  # within the timeout (its watchdog)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectionError("the store was closed")
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = self.loop.create_future()
            try:
                connection = await self._open()
                if self._closed:  # closed while this connection was being made
                    connection.close(ConnectionError("the store was closed"))
                    raise ConnectionError("the store was closed")
            except BaseException as error:
                self._connecting = None
                failed = error if isinstance(error, Exception) else ConnectionError("cancelled")
                connecting.set_exception(failed)
                connecting.exception()  # retrieved: no "never retrieved" warning
                raise
            self._connection = connection
            self._connecting = None
            connecting.set_result(connection)
            return connection
        return await asyncio.shield(connecting)

    async def _open(self) -> _Connection:
        settings, loop = self.settings, self.loop
        made = functools.partial(_Connection, settings.timeout)
        async with asyncio.timeout(settings.timeout):
            if settings.path is not None:
                _, connection = await loop.create_unix_connection(made, settings.path)
            else:
                assert settings.host is not None
                _, connection = await loop.create_connection(made, settings.host, settings.port)
            waiters: list[asyncio.Future[Any]] = []
            try:
                waiters = [connection.send(command, loop) for command in _hello(settings)]
                for waiter in waiters:
                    _checked(await waiter)
            except BaseException:
                connection.close(ConnectionError("the connection's setup failed"))
                for waiter in waiters:  # the ones after a failed reply are never awaited
                    if waiter.done() and not waiter.cancelled():
                        waiter.exception()
                raise
        return connection

    def close(self) -> None:
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None and not self.loop.is_closed():
            connection.close(ConnectionError("the store was closed"))


class _Socket:
    """One blocking connection: a command out, its reply back, within the timeout."""

    __slots__ = ("generation", "reader", "sock")

    def __init__(self, settings: LaneSettings, generation: int) -> None:
        self.generation = generation
        timeout = settings.timeout
        if settings.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(settings.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((settings.host, settings.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        self.sock = sock
        self.reader = hiredis.Reader(replyError=ReplyError)
        try:
            for command in _hello(settings):
                _checked(self.call(command))
        except BaseException:
            sock.close()
            raise

    def call(self, command: bytes) -> Any:
        sock, reader = self.sock, self.reader
        sock.sendall(command)
        reply = reader.gets()
        while reply is False:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("Redis closed the connection")
            reader.feed(data)
            reply = reader.gets()
        return reply

    def close(self) -> None:
        self.sock.close()

    def __del__(self) -> None:
        # A store dropped without close() closes its connections quietly, as redis-py's do.
        sock = getattr(self, "sock", None)
        if sock is not None:
            sock.close()


class BlockingLane:
    """The store's scripts for blocking callers: a bounded set of reused connections.

    A caller takes an idle connection (or opens one, up to ``max_connections``;
    beyond, it waits for one, at most ``timeout``), sends its command, reads
    its reply and gives the connection back. A connection that failed or
    timed out is closed, never given back with a reply still due. After a
    fork, the child never uses its parent's connections.
    """

    def __init__(self, settings: LaneSettings, max_connections: int) -> None:
        self.settings = settings
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle: list[_Socket] = []
        self._pid = os.getpid()
        self._generation = 0  # a connection opened before the last close() is not given back

    def run(self, script: Script, key: str, args: tuple[object, ...]) -> Any:
        """``EVALSHA`` (``EVAL`` if Redis lacks the script); once more after a lost connection."""
        try:
            return self._run_once(script, key, args)
        except _RETRIED:
            return self._run_once(script, key, args)

    def command(self, *parts: object) -> Any:
        """Any other command (the store's checks): its reply, or ``ReplyError``."""
        return _checked(self._call(pack(*parts)))

    def _run_once(self, script: Script, key: str, args: tuple[object, ...]) -> Any:
        """``EVALSHA``, then ``EVAL`` if Redis lacks the script."""
        reply = self._call(script.evalsha(key, args))
        if _lacks_script(reply):
            reply = self._call(script.eval(key, args))
        return _checked(reply)

    def _call(self, command: bytes) -> Any:
        timeout = self.settings.timeout
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"no connection to Redis free within {timeout:g} s")
        try:
            connection = self._take()
            try:
                reply = connection.call(command)
            except BaseException:
                connection.close()
                raise
            if connection.generation == self._generation:
                self._idle.append(connection)
            else:
                connection.close()
            return reply
        finally:
            self._slots.release()

    def _take(self) -> _Socket:
        if self._pid != os.getpid():  # forked: the parent's connections are not ours to use
            self._pid = os.getpid()
            self.close()  # closes this process's copies only: the parent's stay connected
        try:
            return self._idle.pop()
        except IndexError:
            return _Socket(self.settings, self._generation)

    def close(self) -> None:
        """Close the idle connections; those in use are closed when given back."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

"""The Starlette / FastAPI adapter of the HTTP core: routes a host mounts in its ASGI app.

The host supplies two callables: who the visitor is (usually a cookie) and
the signed-in user's token provider (``None`` when nobody is signed in: the
backend cannot mint, and the policy answers). Each callable receives
Starlette's ``Request`` and may be sync or async. Every rule — bodies, flow
ids, origins, the inspector's guard, store failures, never a 500 — lives in
``statemachine.web.http``; this module only translates a Starlette request
into the core's facts (reading at most ``MAX_BODY + 1`` bytes) and the core's
answer back.

In FastAPI, ``app.router.routes.extend(activation_routes(...))``, or mount a
Starlette app made of them: ``app.mount("/", Starlette(routes=[...]))``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Final

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from statemachine.hostcalls._calls import resumed
from statemachine.signals.metrics import ActivationMetrics
from statemachine.tracking._faces import AsyncActivationTracker
from statemachine.web.http import (
    JSON_HEADERS,
    MAX_BODY,
    AsyncActivationHttp,
    AsyncInspectorHttp,
    GuardOf,
    Headers,
    HttpRequest,
    HttpResponse,
    ProviderOf,
    Refused,
    VisitorOf,
    error_response,
    last_resort,
    reads_body,
)
from statemachine.web.inspector import Lookup

__all__ = [
    "BODY_TIMEOUT",
    "MAX_BODY",
    "activation_routes",
    "adapt",
    "inspector_routes",
    "request_facts",
    "starlette_response",
]


BODY_TIMEOUT: Final = 10.0
"""Seconds a request body may take to arrive, all of it: ours are under a kilobyte.

The server waits on the client for as long as the client likes (uvicorn has no body
timeout), so a client that sends part of a body and then nothing, or a byte now and
then, would hold its request open for ever; past this, it is answered 408 (``_CLOSE``)."""


async def request_facts(request: Request, path: str | None = None) -> HttpRequest:
    """The core's facts of a Starlette request; the body is read up to ``MAX_BODY + 1`` bytes.

    The body is read from the ASGI channel here, so a host callable must not read it again.
    A body that takes longer than ``BODY_TIMEOUT`` raises ``Refused`` (408).
    """
    facts, _ = await _facts(request, path)
    return facts


async def _facts(request: Request, path: str | None) -> tuple[HttpRequest, bool]:
    """``request_facts``, and whether the body was read to its end (or there was none)."""
    scope = request.scope
    headers = Headers.from_latin1(scope["headers"])
    method = str(scope["method"])
    body = b""
    declared = headers.get("content-length")
    if reads_body(method, declared):
        body, ended = await _read_body_in_time(request.receive)
    else:  # a GET's body, or one declared over the cap: left unread
        ended = "transfer-encoding" not in headers and (declared or "0").strip() in ("", "0")
    host = headers.get("host")
    if host is None:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else ""
    client = scope.get("client")
    query = scope.get("query_string")
    facts = HttpRequest(
        method,
        scope["path"] if path is None else path,
        headers,
        body,
        str(client[0]) if client else None,
        str(scope.get("scheme", "http")),
        host,
        query.decode("latin-1") if query else "",
        request,
    )
    return facts, ended


class ClientGone(Exception):
    """The client went away before its body arrived (the server said ``http.disconnect``).

    Not an error of ours, and there is nobody to answer: the endpoint sends
    nothing and logs nothing, as the server logs nothing for a closed connection.
    """


async def _read_body_in_time(receive: Receive) -> tuple[bytes, bool]:
    """``_read_body`` within ``BODY_TIMEOUT``, or ``Refused`` (408).

    The body is almost always there already (the server read it with the
    headers): its first step then finishes the read, and no deadline is armed.
    Otherwise the rest runs under the deadline: ``asyncio.timeout`` on asyncio
    (uvicorn), anyio's on any other loop (trio, under hypercorn).
    """
    reading = _read_body(receive)
    try:
        waits_on = reading.send(None)
    except StopIteration as done:
        read: tuple[bytes, bool] = done.value
        return read
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not asyncio
            with anyio.fail_after(BODY_TIMEOUT):
                return await _rest(reading, waits_on)
        async with asyncio.timeout(BODY_TIMEOUT):
            return await _rest(reading, waits_on)
    except TimeoutError:
        raise Refused(408, "the body did not arrive in time") from None


async def _rest(reading: Coroutine[Any, Any, Any], waits_on: Any) -> tuple[bytes, bool]:
    """The rest of a body's read whose first step waited (typed: ``resumed`` is generic)."""
    read: tuple[bytes, bool] = await resumed(reading, waits_on)
    return read


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """At most ``MAX_BODY + 1`` bytes of the body (enough for the core to refuse more), and
    whether that was all of it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY:
                return b"".join(chunks)[: MAX_BODY + 1], False
        if not message.get("more_body", False):
            return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), True


def starlette_response(answer: HttpResponse) -> Response:
    """The core's answer as a Starlette response (repeated headers such as Set-Cookie kept)."""
    response = Response(answer.body, status_code=answer.status)
    response.raw_headers.extend(
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers
    )
    return response


def _raw(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


_CLOSE: Final = (b"connection", b"close")
"""Sent with an answer given before the request's body was read to its end (too slow, too
large, or a body on a GET): uvicorn would otherwise read the rest to keep the connection
alive, for ever for a client that declares a petabyte or never ends its chunks."""

_RAW_JSON: Final = tuple(_raw(JSON_HEADERS))
"""The headers of most answers (every JSON answer without extra headers), encoded once."""


class _Endpoint:
    """One core route as a plain ASGI app: Starlette then lets every method through, so a
    wrong one is the core's JSON 405 like any other refusal."""

    def __init__(
        self, template: str, handle: Callable[[HttpRequest], Awaitable[HttpResponse]]
    ) -> None:
        self.template = template
        self.handle = handle
        self._fixed = "{" not in template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        template = self.template
        ended = False
        try:
            path = template if self._fixed else template.format(**request.path_params)
            facts, ended = await _facts(request, path)
            answer = await self.handle(facts)
        except Refused as refused:  # a body that never finished arriving
            answer = error_response(refused.status, refused.message, refused.headers)
        except ClientGone:  # it hung up before its body arrived: nobody to answer, no fault
            return
        except Exception as error:  # noqa: BLE001 - what escaped every rule
            answer = last_resort(error, template)
        headers = answer.headers
        raw = [(b"content-length", str(len(answer.body)).encode())]
        raw += _RAW_JSON if headers is JSON_HEADERS else _raw(headers)
        if not ended:
            raw.append(_CLOSE)
        await send({"type": "http.response.start", "status": answer.status, "headers": raw})
        await send({"type": "http.response.body", "body": answer.body})


def adapt(
    paths: Iterable[str], handle: Callable[[HttpRequest], Awaitable[HttpResponse]]
) -> list[BaseRoute]:
    """Starlette routes for a core's ``paths`` (templates), each answered by ``handle``."""
    return [Route(path, _Endpoint(path, handle)) for path in paths]


def activation_routes(
    tracker: AsyncActivationTracker,
    *,
    visitor_id: VisitorOf,
    token_provider: ProviderOf,
    allowed_origins: Iterable[str] = (),
    prefix: str = "/activation",
) -> list[BaseRoute]:
    """``POST {prefix}/token``, ``/report``, ``/logout``; ``GET {prefix}/state``, ``/snippet.js``.

    ``visitor_id(request)`` and ``token_provider(request)`` may be sync or
    async. State changes are same-origin only; ``allowed_origins`` adds origins
    (``"https://www.brand.example"``) the app cannot see as its own.
    """
    core = AsyncActivationHttp(
        tracker,
        visitor_id=visitor_id,
        token_provider=token_provider,
        allowed_origins=allowed_origins,
        prefix=prefix,
    )
    return adapt((route.path for route in core.routes), core.handle)


def inspector_routes(
    tracker: AsyncActivationTracker,
    *,
    metrics: ActivationMetrics | None = None,
    prefix: str = "/inspect",
    guard: GuardOf | None = None,
    secret: bytes | str | None = None,
    lookup: Lookup | None = None,
) -> list[BaseRoute]:
    """``GET {prefix}`` (the page), ``{prefix}/visitors[?selected=handle]``,
    ``{prefix}/visitor/{handle}``, ``POST {prefix}/lookup {"query"}``, and ``/metrics``
    when ``metrics`` is given.

    Closed by default: without ``guard`` only loopback clients (and no proxy in
    between) get them; ``guard(request) -> bool``, sync or async, is the host's
    own admin check and alone decides. ``secret`` keys the visitors' references
    (share it between workers); ``lookup(query) -> visitor_id | None``, sync or
    async, is the host's search behind the lookup box (a user id, say).
    """
    core = AsyncInspectorHttp(
        tracker, metrics=metrics, prefix=prefix, guard=guard, secret=secret, lookup=lookup
    )
    return adapt((route.path for route in core.routes), core.handle)

"""The HTTP contract, once, for every framework: request facts in, a response out.

Every rule of the activation routes and the inspector lives here; a framework
adapter (``statemachine.web.routes`` for Starlette and FastAPI) only translates
its request into an ``HttpRequest`` and the ``HttpResponse`` back. That keeps
the rules identical on every framework, and testable without one.

Request facts in (``HttpRequest``):

- ``method``; ``path`` below the mount point (``/activation/token`` with the
  default prefix, ``/token`` when the framework strips the mount itself);
- ``headers``: a ``Headers`` of (name, value) pairs, names case-insensitive,
  repeated headers kept (values as the server decoded them, latin-1);
- ``body``: bytes — an adapter reads at most ``MAX_BODY + 1`` bytes, the core
  refuses more with 413;
- ``client`` (the peer's address, ``None`` when unknown), ``scheme`` and
  ``host`` (the Host header), ``query`` (raw);
- ``native``: the framework's own request, which is what the host's callables
  (``visitor_id``, ``token_provider``, ``guard``) receive.

Response out (``HttpResponse``): ``status``, ``headers`` (pairs, so repeated
``Set-Cookie`` survive) and ``body`` bytes — JSON for every answer except the
snippet (JavaScript), the inspector page (HTML) and ``/metrics`` (Prometheus).

Two faces with the same names, as the trackers have: ``AsyncActivationHttp``
and ``AsyncInspectorHttp`` over an ``AsyncActivationTracker`` (host callables
sync or async), ``ActivationHttp`` and ``InspectorHttp`` over the blocking
``ActivationTracker`` (host callables sync; an awaitable one is run to
completion). Each has ``routes`` (path templates with ``{name}`` segments, and
methods, for the adapter to register) and ``handle(request) -> HttpResponse``.

The rules:

- **State changes are same-origin only.** ``POST`` token, report and logout
  need ``Content-Type: application/json`` (415 otherwise) and are refused (403)
  when ``Origin`` names another origin than the request's own (scheme and Host)
  or, without ``Origin``, when ``Sec-Fetch-Site`` is ``cross-site`` or
  ``same-site``. ``allowed_origins`` adds origins the app cannot see as its own
  (behind a proxy that changes scheme or host). A form on another site can
  therefore change nothing, and no CSRF token is needed.
- **The inspector and /metrics are closed by default.** Without a ``guard``
  only a loopback client gets them, and a request carrying ``Forwarded``,
  ``X-Forwarded-For`` or ``X-Real-IP`` came through a proxy: not local. With
  ``guard(request) -> bool`` (sync or async), the guard alone decides; one that
  raises refuses.
- **Never a 500.** Bad input is a 4xx JSON ``{"error": ...}`` that changed
  nothing; a store that is down is the policy's answer on the token route and
  503 elsewhere. Should anything else escape, the last resort answers 400 and
  logs the exception's type only (its message could quote a token).
"""

from __future__ import annotations

import inspect
import ipaddress
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from types import FunctionType, MethodType, SimpleNamespace
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qs, urlsplit

from statemachine.hostcalls._calls import run_awaitable
from statemachine.protocol.policy import Profile
from statemachine.protocol.replies import TokenReply
from statemachine.signals import logs
from statemachine.signals.metrics import CONTENT_TYPE, ActivationMetrics
from statemachine.stores.base import DamagedRecord, StoreError
from statemachine.tokens.verifier import strict_json
from statemachine.tracking._faces import ActivationTracker, AsyncActivationTracker
from statemachine.tracking._rules import TrackerInputError
from statemachine.web import inspector as content
from statemachine.web.shoppers import mark_not_signed_in

MAX_BODY: Final = 64 * 1024
"""Bytes a request body may have: a flow id and the tag's callback object are far smaller."""

_NO_BODY: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def reads_body(method: str, declared_length: str | None) -> bool:
    """Whether an adapter reads the body (at most ``MAX_BODY + 1`` bytes) before the core.

    Not for methods without one, nor when the client declares more than the cap: the
    core refuses that (413) from the header alone. A declared length that is not a plain
    number is read like no declaration, within the same cap, and the core refuses it.
    """
    if method in _NO_BODY:
        return False
    declared = (declared_length or "").strip()
    return not (declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY)


JSON: Final = "application/json"
HTTP_ERROR: Final = "activation.http_error"
"""Log event of the last resort and of host callables that failed: the exception's type only."""

NO_STORE: Final = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))
JSON_HEADERS: Final = (("Content-Type", JSON), *NO_STORE)
"""The headers of a JSON answer; ``json_response`` hands out this very tuple when it adds none,
so an adapter may encode it once (``statemachine.web.routes``)."""
_PROXY_HEADERS: Final = ("forwarded", "x-forwarded-for", "x-real-ip")
_CROSS_SITE: Final = frozenset({"cross-site", "same-site"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_GET: Final = ("GET", "HEAD")
_POST: Final = ("POST",)
_UNAVAILABLE: Final = "the activation store is unavailable; try again"
LAST_RESORT: Final = "the request could not be handled"


DAMAGED: Final = SimpleNamespace(
    state=SimpleNamespace(value="damaged"),
    since=0.0,
    attempts=0,
    reason=None,
    authenticated_until=None,
    history=(),
)
"""How the inspector lists a record nobody can read (a logout repairs it): never a failed page."""


class Headers:
    """Request headers: names case-insensitive, repeated headers kept in order.

    Made from text pairs, or with ``from_latin1`` from the byte pairs an ASGI or WSGI server
    hands over; then a value is decoded (latin-1, as HTTP defines it) only when asked for.
    """

    __slots__ = ("_values",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        values: dict[str, list[str | bytes]] = {}
        for name, value in pairs:
            key = name.lower()
            found = values.get(key)
            if found is None:
                values[key] = [value]
            else:
                found.append(value)
        self._values = values

    @classmethod
    def from_latin1(cls, pairs: Sequence[tuple[bytes, bytes]]) -> Headers:
        made = cls()
        values: dict[str, list[str | bytes]] = {
            name.decode("latin-1").lower(): [value] for name, value in pairs
        }
        if len(values) == len(pairs):  # no repeated header: the common case, done
            made._values = values
            return made
        values = made._values
        for name, value in pairs:
            key = name.decode("latin-1").lower()
            found = values.get(key)
            if found is None:
                values[key] = [value]
            else:
                found.append(value)
        return made

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        found = self._values.get(name)
        if found is None:
            found = self._values.get(name.lower())
            if found is None:
                return default
        value = found[0]
        return value if isinstance(value, str) else value.decode("latin-1")

    def get_all(self, name: str) -> list[str]:
        return [
            value if isinstance(value, str) else value.decode("latin-1")
            for value in self._values.get(name.lower(), ())
        ]

    def count(self, name: str) -> int:
        """How many times ``name`` (lower case) was sent."""
        return len(self._values.get(name, ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for name, values in self._values.items():
            for value in values:
                yield name, value if isinstance(value, str) else value.decode("latin-1")

    def __repr__(self) -> str:  # values may hold cookies: names only
        return f"Headers({sorted(self._values)})"


class HttpRequest(NamedTuple):
    """The facts of one request, as every framework has them."""

    method: str
    path: str
    headers: Headers
    body: bytes = b""
    client: str | None = None
    scheme: str = "http"
    host: str = ""
    query: str = ""
    native: Any = None

    def for_host(self) -> Any:
        """What the host's callables receive: the framework's request, or these facts."""
        return self if self.native is None else self.native

    def __repr__(self) -> str:  # never the headers' or body's values
        return f"HttpRequest({self.method} {self.path!r}, {len(self.body)} bytes)"


class HttpResponse(NamedTuple):
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def content_type(self) -> str | None:
        for name, value in self.headers:
            if name.lower() == "content-type":
                return value
        return None


class Route(NamedTuple):
    """A path an adapter registers: ``{name}`` stands for one path segment."""

    path: str
    methods: tuple[str, ...]


class Refused(Exception):
    """A request the core answers with a 4xx JSON error; nothing changed."""

    def __init__(
        self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def refuse_unrouted(methods_by_path: Mapping[str, tuple[str, ...]], request: HttpRequest) -> None:
    """Raise ``Refused``: 404 when no route has ``request``'s path, 405 (with ``Allow``) when
    the route does not take its method; return when the request may go on."""
    methods = methods_by_path.get(request.path)
    if methods is None:
        raise Refused(404, "no such route")
    if request.method.upper() not in methods:
        raise Refused(405, "method not allowed", (("Allow", ", ".join(methods)),))


_ENCODE: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_response(
    status: int, body: object, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    data = _ENCODE(body).encode("utf-8")
    return HttpResponse(status, JSON_HEADERS + headers if headers else JSON_HEADERS, data)


def error_response(
    status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    return json_response(status, {"error": message}, headers)


def last_resort(error: BaseException, where: str) -> HttpResponse:
    """What escaped every rule: logged by type (a message could quote a token), answered 400.

    ``where`` is a route template, never the request's own path (which the client chose).
    """
    logs.emit(logs.PROXY.error, HTTP_ERROR, route=where, error_type=type(error).__name__)
    return error_response(400, LAST_RESORT)


# -- the rules ---------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _origin(text: str) -> str | None:
    """``scheme://host[:port]`` in canonical form (lower case, default port dropped), or None."""
    if not text.isascii() or len(text) > 2048:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    if parts.username is not None or parts.query or parts.fragment:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def allowed_origin_set(allowed_origins: Iterable[str]) -> frozenset[str]:
    """Check and canonicalise ``allowed_origins`` once, when the routes are made."""
    if isinstance(allowed_origins, str):
        raise TypeError("allowed_origins is a collection of origins, not one string")
    found = set()
    for text in allowed_origins:
        origin = _origin(text) if isinstance(text, str) else None
        if origin is None:
            raise ValueError(f"not an origin (scheme://host[:port]): {text!r}")
        found.add(origin)
    return frozenset(found)


def check_same_origin(request: HttpRequest, allowed: frozenset[str] = frozenset()) -> None:
    """Refuse (403) a state change another site's page could have sent."""
    headers = request.headers
    sent = headers.get("origin")
    if sent is not None:
        if headers.count("origin") > 1:
            raise Refused(403, "one Origin header, please: cross-origin state changes are refused")
        own = f"{request.scheme}://{request.host}"
        if sent == own:
            return  # the common case, without parsing
        origin = _origin(sent)
        if origin is None or (origin != _origin(own) and origin not in allowed):
            raise Refused(403, "cross-origin state changes are refused")
        return
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() in _CROSS_SITE:
        raise Refused(403, "cross-site state changes are refused")


def check_json_type(request: HttpRequest) -> None:
    """Refuse (415) a body that is not declared JSON: an HTML form cannot declare it."""
    kind = request.headers.get("content-type")
    if (
        kind is None
        or request.headers.count("content-type") != 1
        or (kind != JSON and kind.split(";")[0].strip().lower() != JSON)
    ):
        raise Refused(415, "the body must be JSON (Content-Type: application/json)")


def check_state_change(request: HttpRequest, allowed: frozenset[str] = frozenset()) -> None:
    """A state-changing request: same origin, declared JSON, within the size cap."""
    check_same_origin(request, allowed)
    check_json_type(request)
    headers = request.headers
    declared = headers.get("content-length")
    if declared is not None:
        if headers.count("content-length") > 1 or not declared.isascii():
            raise Refused(400, "Content-Length must be one number")
        if not declared.strip().isdigit():
            raise Refused(400, "Content-Length must be one number")
        if int(declared) > MAX_BODY:
            raise Refused(413, f"the body is over {MAX_BODY} bytes")
    if len(request.body) > MAX_BODY:
        raise Refused(413, f"the body is over {MAX_BODY} bytes")


def json_object(request: HttpRequest, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object, strictly parsed (UTF-8, no duplicate keys, bounded nesting)."""
    if empty_ok and not request.body.strip():
        return {}
    try:
        body = strict_json(request.body)
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    return body


def text_field(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise Refused(400, f"'{field}' must be a string")
    return value


def is_local(request: HttpRequest) -> bool:
    """A loopback peer that no proxy stands in front of."""
    if any(name in request.headers for name in _PROXY_HEADERS) or not request.client:
        return False
    try:
        address = ipaddress.ip_address(request.client.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def cookie_header(
    name: str,
    value: str,
    *,
    secure: bool,
    max_age: int | None = None,
    path: str = "/",
) -> tuple[str, str]:
    """A ``Set-Cookie`` the library sets: HttpOnly, SameSite=Lax, and Secure over HTTPS."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not re.fullmatch(r"[A-Za-z0-9_.=+/-]*", value):
        raise ValueError("cookie names and values the library sets are plain tokens")
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return ("Set-Cookie", "; ".join(parts))


def is_https(request: HttpRequest) -> bool:
    return request.scheme.lower() == "https"


# -- the activation routes ---------------------------------------------------------------------

VisitorOf = Callable[[Any], "str | Awaitable[str | None] | None"]
ProviderOf = Callable[[Any], Any]
GuardOf = Callable[[Any], "bool | Awaitable[bool]"]


def snippet_source() -> str:
    return resources.files("statemachine.web").joinpath("static/snippet.js").read_text("utf-8")


_UNKNOWN_VISITOR: Final = {
    "state": "unauthenticated",
    "attempts": 0,
    "reason": None,
    "history": [],
    "authenticated_until": None,
}


_REPLY_HEADERS: dict[type, str | None] = {}


def token_response(reply: TokenReply, *, signed_in: bool = True) -> HttpResponse:
    """The token endpoint's answer, with the headers the reply asks for (``Retry-After``).

    ``signed_in=False`` marks the answer for a visitor nobody signed in, so the
    page says "not signed in" rather than raising an alarm.

    A reply names them in ``headers`` (a mapping), or gives ``retry_after`` in seconds
    (rounded up, at least 1). Which of the two a reply type has is looked up once: a
    missing attribute costs an exception on every request otherwise.
    """
    kind = type(reply)
    if kind not in _REPLY_HEADERS:
        found = [name for name in ("headers", "retry_after") if hasattr(kind, name)]
        _REPLY_HEADERS[kind] = found[0] if found else None
    source = _REPLY_HEADERS[kind]
    extra: tuple[tuple[str, str], ...] = ()
    if source == "headers":
        extra = tuple((str(k), str(v)) for k, v in getattr(reply, "headers").items())  # noqa: B009
    elif source == "retry_after":
        seconds = getattr(reply, "retry_after")  # noqa: B009
        if seconds is not None:
            extra = (("Retry-After", str(max(1, math.ceil(seconds)))),)
    body = reply.to_dict() if signed_in else mark_not_signed_in(reply.to_dict())
    return json_response(reply.status_code, body, extra)


class _Activation:
    """What both faces of the activation routes share: routing and every rule."""

    def __init__(
        self,
        *,
        visitor_id: VisitorOf,
        token_provider: ProviderOf,
        allowed_origins: Iterable[str] = (),
        prefix: str = "",
    ) -> None:
        if not callable(visitor_id) or not callable(token_provider):
            raise TypeError("visitor_id and token_provider must be callables taking the request")
        self.visitor_id = visitor_id
        self.token_provider = token_provider
        self.allowed = allowed_origin_set(allowed_origins)
        self.prefix = prefix.rstrip("/")
        self.routes = (
            Route(f"{self.prefix}/token", _POST),
            Route(f"{self.prefix}/report", _POST),
            Route(f"{self.prefix}/logout", _POST),
            Route(f"{self.prefix}/state", _GET),
            Route(f"{self.prefix}/snippet.js", _GET),
        )
        self._names = {
            route.path: (route.path.rsplit("/", 1)[1], route.methods) for route in self.routes
        }
        source = snippet_source().encode("utf-8")
        self._snippet = HttpResponse(
            200,
            (
                ("Content-Type", "text/javascript; charset=utf-8"),
                ("X-Content-Type-Options", "nosniff"),
            ),
            source,
        )

    def _route(self, request: HttpRequest) -> str:
        found = self._names.get(request.path)
        if found is None:
            raise Refused(404, "no such route")
        name, methods = found
        if request.method.upper() not in methods:
            raise Refused(405, "method not allowed", (("Allow", ", ".join(methods)),))
        if name != "state" and name != "snippet.js":
            check_state_change(request, self.allowed)
        return name

    @staticmethod
    def _visitor(found: object) -> str:
        if not found:
            raise Refused(401, "no visitor: the visitor cookie is missing")
        if not isinstance(found, str):
            raise Refused(400, "the visitor id must be a string")
        return found

    def _failed(self, error: Exception, request: HttpRequest) -> HttpResponse:
        if isinstance(error, Refused):
            return error_response(error.status, error.message, error.headers)
        if isinstance(error, TrackerInputError):
            return error_response(400, str(error))
        if isinstance(error, StoreError):
            return error_response(503, _UNAVAILABLE)
        return last_resort(error, request.path if request.path in self._names else "unknown")

    def _host_failed(self, error: Exception, what: str) -> None:
        logs.emit(logs.PROXY.error, HTTP_ERROR, route=what, error_type=type(error).__name__)


class AsyncActivationHttp(_Activation):
    """The activation routes over an ``AsyncActivationTracker``; host callables sync or async."""

    def __init__(
        self,
        tracker: AsyncActivationTracker,
        *,
        visitor_id: VisitorOf,
        token_provider: ProviderOf,
        allowed_origins: Iterable[str] = (),
        prefix: str = "",
    ) -> None:
        super().__init__(
            visitor_id=visitor_id,
            token_provider=token_provider,
            allowed_origins=allowed_origins,
            prefix=prefix,
        )
        self.tracker = tracker

    async def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            name = self._route(request)
            if name == "snippet.js":
                return self._snippet
            tracker = self.tracker
            try:
                found = await _settle(self.visitor_id(request.for_host()))
            except Exception as error:  # noqa: BLE001 - a host callable choking on a cookie
                self._host_failed(error, "visitor_id")
                raise Refused(400, "the visitor cookie could not be read") from None
            who = self._visitor(found)
            if name == "token":
                flow = text_field(json_object(request), "flow")
                try:
                    provider = await _settle(self.token_provider(request.for_host()))
                except Exception as error:  # noqa: BLE001 - treated as nobody signed in
                    self._host_failed(error, "token_provider")
                    provider = None
                # Nobody signed in (None): a blocking policy answers without the store.
                answer = await tracker.token_request(who, flow, provider or None)
                return token_response(answer, signed_in=provider is not None)
            if name == "report":
                body = json_object(request)
                reply = await tracker.report(who, text_field(body, "flow"), body.get("activation"))
                return json_response(200, reply.to_dict())
            if name == "logout":
                json_object(request, empty_ok=True)
                await tracker.logout(who)
                return json_response(200, {"state": "unauthenticated"})
            view = await tracker.view(who)
            return json_response(200, _UNKNOWN_VISITOR if view is None else view.to_dict())
        except Exception as error:  # noqa: BLE001 - every failure is an answer, never a 500
            return self._failed(error, request)


class ActivationHttp(_Activation):
    """The activation routes over a blocking ``ActivationTracker`` (WSGI hosts)."""

    def __init__(
        self,
        tracker: ActivationTracker,
        *,
        visitor_id: VisitorOf,
        token_provider: ProviderOf,
        allowed_origins: Iterable[str] = (),
        prefix: str = "",
    ) -> None:
        super().__init__(
            visitor_id=visitor_id,
            token_provider=token_provider,
            allowed_origins=allowed_origins,
            prefix=prefix,
        )
        self.tracker = tracker

    def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            name = self._route(request)
            if name == "snippet.js":
                return self._snippet
            tracker = self.tracker
            try:
                found = _settle_blocking(self.visitor_id(request.for_host()))
            except Exception as error:  # noqa: BLE001 - a host callable choking on a cookie
                self._host_failed(error, "visitor_id")
                raise Refused(400, "the visitor cookie could not be read") from None
            who = self._visitor(found)
            if name == "token":
                flow = text_field(json_object(request), "flow")
                try:
                    provider = _settle_blocking(self.token_provider(request.for_host()))
                except Exception as error:  # noqa: BLE001 - treated as nobody signed in
                    self._host_failed(error, "token_provider")
                    provider = None
                # Nobody signed in (None): a blocking policy answers without the store.
                answer = tracker.token_request(who, flow, provider or None)
                return token_response(answer, signed_in=provider is not None)
            if name == "report":
                body = json_object(request)
                reply = tracker.report(who, text_field(body, "flow"), body.get("activation"))
                return json_response(200, reply.to_dict())
            if name == "logout":
                json_object(request, empty_ok=True)
                tracker.logout(who)
                return json_response(200, {"state": "unauthenticated"})
            view = tracker.view(who)
            return json_response(200, _UNKNOWN_VISITOR if view is None else view.to_dict())
        except Exception as error:  # noqa: BLE001 - every failure is an answer, never a 500
            return self._failed(error, request)


_NEVER_AWAITABLE: Final = frozenset({str, bool, type(None), FunctionType, MethodType})
"""What host callables usually return (a visitor id, a verdict, nobody, a provider function):
types that cannot be awaited (``__await__`` would have to be on the type), so the per-request
check skips ``inspect.isawaitable``'s ABC lookup for them."""


async def _settle(value: Any) -> Any:
    if type(value) in _NEVER_AWAITABLE:
        return value
    if inspect.isawaitable(value):
        return await value
    return value


def _settle_blocking(value: Any) -> Any:
    if inspect.isawaitable(value):
        return run_awaitable(value)
    return value


# -- the inspector and /metrics ----------------------------------------------------------------


class _Inspector:
    """What both faces of the inspector share: routing, the guard's verdict, the answers.

    Routes: the page at the prefix; ``/visitors`` (the counts and the listing, and
    with ``?selected=handle`` that visitor too: the page's one request a second);
    ``/visitor/{handle}`` (one visitor, one store read); ``POST /lookup {"query"}``
    (the host's ``lookup``, then one read); ``/metrics``.
    """

    def __init__(
        self,
        tracker: Any,
        *,
        metrics: ActivationMetrics | None = None,
        prefix: str = "/inspect",
        guard: GuardOf | None = None,
        secret: bytes | str | None = None,
        lookup: content.Lookup | None = None,
    ) -> None:
        if guard is not None and not callable(guard):
            raise TypeError("guard must be a callable taking the request and answering a bool")
        if lookup is not None and not callable(lookup):
            raise TypeError("lookup must be a callable taking the query text")
        self.tracker = tracker
        self.metrics = metrics
        self.guard = guard
        self.lookup = lookup
        self.names = content.References(secret)
        self.prefix = prefix.rstrip("/")
        self.profile = Profile.of(tracker.policy)
        routes = [
            Route(self.prefix or "/", _GET),
            Route(f"{self.prefix}/visitors", _GET),
            Route(f"{self.prefix}/visitor/{{handle}}", _GET),
            Route(f"{self.prefix}/lookup", _POST),
        ]
        if metrics is not None:
            routes.append(Route("/metrics", _GET))
        self.routes = tuple(routes)
        self._paths = frozenset(route.path for route in routes)
        page = content.page_html().encode("utf-8")
        self._page = HttpResponse(
            200,
            (("Content-Type", "text/html; charset=utf-8"), *NO_STORE, ("X-Frame-Options", "DENY")),
            page,
        )

    def _route(self, request: HttpRequest) -> tuple[str, str]:
        path = request.path
        if path == (self.prefix or "/"):
            name, handle = "page", ""
        elif path == f"{self.prefix}/visitors":
            name, handle = "visitors", _query_value(request.query, "selected")
        elif path.startswith(f"{self.prefix}/visitor/"):
            name, handle = "visitor", path[len(self.prefix) + len("/visitor/") :]
        elif path == f"{self.prefix}/lookup":
            name, handle = "lookup", ""
        elif path == "/metrics" and self.metrics is not None:
            name, handle = "metrics", ""
        else:
            raise Refused(404, "no such route")
        methods = _POST if name == "lookup" else _GET
        if request.method.upper() not in methods:
            raise Refused(405, "method not allowed", (("Allow", ", ".join(methods)),))
        return name, handle

    @staticmethod
    def _verdict(allowed: object) -> None:
        if allowed is not True:
            raise Refused(403, "the inspector is closed to this request")

    def _local_only(self, request: HttpRequest) -> None:
        if not is_local(request):
            raise Refused(
                403, "the inspector and /metrics answer loopback clients only, without a guard"
            )

    @staticmethod
    def _query(request: HttpRequest) -> str:
        check_json_type(request)
        try:
            return content.check_query(json_object(request).get("query"))
        except ValueError as bad:
            raise Refused(400, str(bad)) from None

    def _one(self, key: str | None, view: Any) -> dict[str, Any] | None:
        if key is None or view is None:
            return None
        if view is DAMAGED:
            return content.damaged_body(self.profile, self.names, key)
        return content.visitor_body(self.profile, self.names, key, view)

    @staticmethod
    def _found(body: dict[str, Any] | None, message: str) -> HttpResponse:
        if body is None:
            raise Refused(404, message)
        return json_response(200, body)

    def _scrape(self) -> HttpResponse:
        assert self.metrics is not None
        return HttpResponse(200, (("Content-Type", CONTENT_TYPE), *NO_STORE), self.metrics.render())

    def _failed(self, error: Exception, request: HttpRequest) -> HttpResponse:
        if isinstance(error, Refused):
            return error_response(error.status, error.message, error.headers)
        if isinstance(error, StoreError):
            return error_response(503, "the activation store is unavailable")
        where = request.path
        if where.startswith(f"{self.prefix}/visitor/"):
            where = f"{self.prefix}/visitor/{{ref}}"
        return last_resort(error, where if where in self._paths else "unknown")

    def _guard_failed(self, error: Exception) -> None:
        logs.emit(logs.PROXY.error, HTTP_ERROR, route="guard", error_type=type(error).__name__)
        raise Refused(403, "the inspector is closed to this request") from None

    def _host_failed(self, error: Exception) -> None:
        logs.emit(logs.PROXY.error, HTTP_ERROR, route="lookup", error_type=type(error).__name__)


NO_VISITOR: Final = "no such visitor in the store"
NOT_FOUND: Final = "no visitor found for that query"


class AsyncInspectorHttp(_Inspector):
    """The inspector and ``/metrics`` over an ``AsyncActivationTracker``."""

    def __init__(
        self,
        tracker: AsyncActivationTracker,
        *,
        metrics: ActivationMetrics | None = None,
        prefix: str = "/inspect",
        guard: GuardOf | None = None,
        secret: bytes | str | None = None,
        lookup: content.Lookup | None = None,
    ) -> None:
        super().__init__(
            tracker, metrics=metrics, prefix=prefix, guard=guard, secret=secret, lookup=lookup
        )

    async def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            name, handle = self._route(request)
            if self.guard is None:
                self._local_only(request)
            else:
                try:
                    allowed = bool(await _settle(self.guard(request.for_host())))
                except Exception as error:  # noqa: BLE001 - a guard that fails refuses
                    self._guard_failed(error)
                self._verdict(allowed)
            if name == "page":
                return self._page
            if name == "metrics":
                return self._scrape()
            if name == "visitor":
                return self._found(await self._visitor(handle), NO_VISITOR)
            if name == "lookup":
                return self._found(await self._lookup(self._query(request)), NOT_FOUND)
            body = await self._listing()
            if handle:
                body["selected"] = await self._visitor(handle)
            return json_response(200, body)
        except Exception as error:  # noqa: BLE001 - every failure is an answer, never a 500
            return self._failed(error, request)

    async def _view(self, key: str | None) -> Any:
        if key is None:
            return None
        try:
            return await self.tracker.view(key)
        except TrackerInputError:
            return None
        except DamagedRecord:
            return DAMAGED

    async def _visitor(self, handle: str) -> dict[str, Any] | None:
        key = self.names.open(handle)
        return self._one(key, await self._view(key))  # one store read

    async def _lookup(self, query: str) -> dict[str, Any] | None:
        key: str | None = None
        if self.lookup is not None:
            try:
                found = await _settle(self.lookup(query))
            except Exception as error:  # noqa: BLE001 - the host's search failing finds nobody
                self._host_failed(error)
                found = None
            key = found if isinstance(found, str) and found else None
        if key is None and content.REF.fullmatch(query.lower()):
            for candidate in await self.tracker.store.akeys(content.MAX_LISTED):
                if self.names.ref(candidate) == query.lower():
                    key = candidate
                    break
        return self._one(key, await self._view(key))

    async def _listing(self) -> dict[str, Any]:
        tracker = self.tracker
        keys = await tracker.store.akeys(content.MAX_LISTED + 1)
        found: list[tuple[str, Any]] = []
        damaged: list[str] = []
        for key in keys[: content.MAX_LISTED]:
            view = await self._view(key)
            if view is DAMAGED:  # listed as damaged (a logout repairs it), never a failed page
                damaged.append(key)
                continue
            if view is not None:
                found.append((key, view))
        return content.listing_body(
            tracker.policy,
            self.names,
            found,
            damaged=damaged,
            more=len(keys) > content.MAX_LISTED,
        )


class InspectorHttp(_Inspector):
    """The inspector and ``/metrics`` over a blocking ``ActivationTracker``."""

    def __init__(
        self,
        tracker: ActivationTracker,
        *,
        metrics: ActivationMetrics | None = None,
        prefix: str = "/inspect",
        guard: GuardOf | None = None,
        secret: bytes | str | None = None,
        lookup: content.Lookup | None = None,
    ) -> None:
        super().__init__(
            tracker, metrics=metrics, prefix=prefix, guard=guard, secret=secret, lookup=lookup
        )
        store: Any = tracker.store  # keys() is not part of the Store protocol
        self._limited = "limit" in inspect.signature(store.keys).parameters

    def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            name, handle = self._route(request)
            if self.guard is None:
                self._local_only(request)
            else:
                try:
                    allowed = bool(_settle_blocking(self.guard(request.for_host())))
                except Exception as error:  # noqa: BLE001 - a guard that fails refuses
                    self._guard_failed(error)
                self._verdict(allowed)
            if name == "page":
                return self._page
            if name == "metrics":
                return self._scrape()
            if name == "visitor":
                return self._found(self._visitor(handle), NO_VISITOR)
            if name == "lookup":
                return self._found(self._lookup(self._query(request)), NOT_FOUND)
            body = self._listing()
            if handle:
                body["selected"] = self._visitor(handle)
            return json_response(200, body)
        except Exception as error:  # noqa: BLE001 - every failure is an answer, never a 500
            return self._failed(error, request)

    def _keys(self, limit: int) -> list[str]:
        store = self.tracker.store
        if self._limited:
            return list(store.keys(limit))
        return list(store.keys())[-limit:]

    def _view(self, key: str | None) -> Any:
        if key is None:
            return None
        try:
            return self.tracker.view(key)
        except TrackerInputError:
            return None
        except DamagedRecord:
            return DAMAGED

    def _visitor(self, handle: str) -> dict[str, Any] | None:
        key = self.names.open(handle)
        return self._one(key, self._view(key))  # one store read

    def _lookup(self, query: str) -> dict[str, Any] | None:
        key: str | None = None
        if self.lookup is not None:
            try:
                found = _settle_blocking(self.lookup(query))
            except Exception as error:  # noqa: BLE001 - the host's search failing finds nobody
                self._host_failed(error)
                found = None
            key = found if isinstance(found, str) and found else None
        if key is None and content.REF.fullmatch(query.lower()):
            for candidate in self._keys(content.MAX_LISTED):
                if self.names.ref(candidate) == query.lower():
                    key = candidate
                    break
        return self._one(key, self._view(key))

    def _listing(self) -> dict[str, Any]:
        keys = self._keys(content.MAX_LISTED + 1)
        found: list[tuple[str, Any]] = []
        damaged: list[str] = []
        for key in keys[: content.MAX_LISTED]:
            view = self._view(key)
            if view is DAMAGED:  # listed as damaged (a logout repairs it), never a failed page
                damaged.append(key)
                continue
            if view is not None:
                found.append((key, view))
        return content.listing_body(
            self.tracker.policy,
            self.names,
            found,
            damaged=damaged,
            more=len(keys) > content.MAX_LISTED,
        )


def _query_value(query: str, name: str) -> str:
    """One query-string parameter (the first), or ''; bounded, like every input."""
    if len(query) > 4096:
        raise Refused(414, "the query string is too long")
    try:
        values = parse_qs(query, keep_blank_values=False, max_num_fields=16).get(name)
    except ValueError:  # more fields than any page of ours sends
        raise Refused(400, "the query string has too many fields") from None
    return values[0] if values else ""

"""The framework-neutral HTTP core, both faces (async over AsyncActivationTracker, blocking over
ActivationTracker), without any framework: every rule on every route.

- state changes (token, report, logout) are same-origin JSON only;
- the inspector and /metrics answer loopback clients only, or whom the host's guard admits;
- nothing is ever a 500: refusals are 4xx JSON, and the last resort logs a type, never a message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from policies import DefensivePolicy
from statemachine import ActivationTracker, AsyncActivationTracker
from statemachine.signals.metrics import ActivationMetrics
from statemachine.stores import MemoryStore
from statemachine.tokens import TokenIssuer
from statemachine.web.http import (
    LAST_RESORT,
    MAX_BODY,
    ActivationHttp,
    AsyncActivationHttp,
    AsyncInspectorHttp,
    Headers,
    HttpRequest,
    HttpResponse,
    InspectorHttp,
    cookie_header,
    is_local,
    token_response,
)
from statemachine.web.inspector import References

HOST = "brand.test:8000"
ORIGIN = f"http://{HOST}"
SUCCESS = {
    "authentication": {
        "option": {"type": "SECURED_AUTHENTICATION"},
        "status": "authentication-success",
    }
}


def request(
    method: str,
    path: str,
    body: object = None,
    *,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    visitor: str | None = "v1",
    client: str | None = "127.0.0.1",
    scheme: str = "http",
    host: str = HOST,
    raw: bytes | None = None,
) -> HttpRequest:
    """A request as a browser on the page would send it, unless ``headers`` say otherwise."""
    pairs: list[tuple[str, str]] = []
    if visitor is not None:
        pairs += [("X-Visitor", visitor), ("X-User", "user-" + visitor)]
    if headers is None:
        headers = {"Origin": f"{scheme}://{host}", "Content-Type": "application/json"}
        headers = headers if method == "POST" else {}
    pairs += list(headers.items()) if isinstance(headers, dict) else headers
    if raw is None:
        raw = b"" if body is None else json.dumps(body).encode()
    return HttpRequest(method, path, Headers(pairs), raw, client, scheme, host)


class Face:
    """One face of the core with a fresh tracker: ``call`` answers a request on either face."""

    def __init__(self, kind: str, issuer: TokenIssuer, loop: asyncio.AbstractEventLoop) -> None:
        self.kind, self.issuer, self.loop = kind, issuer, loop
        tracker_class = AsyncActivationTracker if kind == "async" else ActivationTracker
        self.tracker: Any = tracker_class(DefensivePolicy(), MemoryStore())
        self.metrics = ActivationMetrics()
        self.tracker.add_listener(self.metrics)

    def visitor_id(self, request: HttpRequest) -> str | None:
        return request.headers.get("x-visitor")

    def token_provider(self, request: HttpRequest) -> Any:
        user = request.headers.get("x-user")
        return None if user is None else partial(self.issuer.issue, user)

    def activation(self, tracker: Any = None, **kw: Any) -> Any:
        core = AsyncActivationHttp if self.kind == "async" else ActivationHttp
        kw.setdefault("visitor_id", self.visitor_id)
        kw.setdefault("token_provider", self.token_provider)
        return core(self.tracker if tracker is None else tracker, prefix="/activation", **kw)

    def inspector(self, **kw: Any) -> Any:
        core = AsyncInspectorHttp if self.kind == "async" else InspectorHttp
        kw.setdefault("secret", INSPECTOR_SECRET)
        return core(self.tracker, metrics=self.metrics, **kw)

    def call(self, core: Any, made: HttpRequest) -> HttpResponse:
        answer = core.handle(made)
        if self.kind == "async":
            answer = self.loop.run_until_complete(answer)
        assert isinstance(answer, HttpResponse)
        assert answer.status < 500 or answer.status == 503, answer
        return answer

    def state(self, core: Any, visitor: str = "v1") -> Any:
        return body_of(self.call(core, request("GET", "/activation/state", visitor=visitor)))


def body_of(answer: HttpResponse) -> Any:
    assert answer.content_type == "application/json", answer
    return json.loads(answer.body)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    made = asyncio.new_event_loop()
    yield made
    made.close()


@pytest.fixture(params=["async", "blocking"])
def face(request: pytest.FixtureRequest, issuer: TokenIssuer, loop: Any) -> Face:
    return Face(request.param, issuer, loop)


def authenticate(face: Face, core: Any, visitor: str = "v1") -> None:
    token = face.call(core, request("POST", "/activation/token", {"flow": "f1"}, visitor=visitor))
    assert "authenticationOption" in body_of(token)
    done = {"flow": "f1", "activation": SUCCESS}
    face.call(core, request("POST", "/activation/report", done, visitor=visitor))
    assert face.state(core, visitor)["state"] == "authenticated"


# -- the flow ------------------------------------------------------------------------------------


def test_the_whole_flow_on_both_faces(face: Face) -> None:
    core = face.activation()
    token = face.call(core, request("POST", "/activation/token", {"flow": "f1"}))
    assert token.status == 200
    assert ("Cache-Control", "no-store") in token.headers
    assert body_of(token)["authenticationOption"]["type"] == "SECURED_AUTHENTICATION"
    other = face.call(core, request("POST", "/activation/token", {"flow": "f2"}))
    assert (other.status, body_of(other)) == (409, {"reason": "A login is already ongoing"})
    report = face.call(
        core, request("POST", "/activation/report", {"flow": "f1", "activation": SUCCESS})
    )
    assert body_of(report) == {"state": "authenticated", "next": None, "accepted": True}
    assert face.state(core)["state"] == "authenticated"
    for body in (None, {}):  # logout takes an empty JSON body or an object
        out = face.call(core, request("POST", "/activation/logout", body))
        assert body_of(out) == {"state": "unauthenticated"}
    snippet = face.call(core, request("GET", "/activation/snippet.js"))
    assert snippet.content_type == "text/javascript; charset=utf-8"
    assert b"SecuredActivation" in snippet.body
    assert face.state(core, "never-seen")["state"] == "unauthenticated"


def test_nobody_signed_in_and_a_failing_provider_lookup_get_the_policy(face: Face) -> None:
    def broken_lookup(_request: Any) -> Any:
        raise KeyError("session table gone")

    for core in (face.activation(), face.activation(token_provider=broken_lookup)):
        made = request("POST", "/activation/token", {"flow": "f1"}, visitor="v9")
        made = made._replace(headers=Headers(p for p in made.headers if p[0] != "x-user"))
        answer = face.call(core, made)
        assert (answer.status, body_of(answer)["activate"]) == (200, False)


# -- same-origin state changes -------------------------------------------------------------------

STATE_CHANGES = [
    ("/activation/token", {"flow": "f2"}),
    ("/activation/report", {"flow": "f1", "activation": SUCCESS}),
    ("/activation/logout", {}),
]
JSON_TYPE = ("Content-Type", "application/json")


@pytest.mark.parametrize(("path", "body"), STATE_CHANGES, ids=["token", "report", "logout"])
@pytest.mark.parametrize(
    "headers",
    [
        [("Origin", "http://evil.test"), JSON_TYPE],
        [("Origin", "http://brand.test:8001"), JSON_TYPE],  # a sibling site on another port
        [("Origin", "https://brand.test:8000"), JSON_TYPE],  # another scheme
        [("Origin", "null"), JSON_TYPE],  # an opaque origin (sandboxed frame, file:)
        [("Origin", "http://brand.test:8000/page"), JSON_TYPE],  # not an origin
        [("Origin", "http://brånd.test:8000"), JSON_TYPE],
        [("Origin", ORIGIN), ("Origin", "http://evil.test"), JSON_TYPE],
        [("Sec-Fetch-Site", "cross-site"), JSON_TYPE],
        [("Sec-Fetch-Site", "same-site"), JSON_TYPE],
        [("Sec-Fetch-Site", " Cross-Site "), JSON_TYPE],
    ],
    ids=[
        "other-site",
        "other-port",
        "other-scheme",
        "null",
        "with-path",
        "non-ascii",
        "two-origins",
        "fetch-cross-site",
        "fetch-same-site",
        "fetch-odd-case",
    ],
)
def test_a_state_change_from_another_origin_is_403_and_changes_nothing(
    face: Face, path: str, body: Any, headers: list[tuple[str, str]]
) -> None:
    core = face.activation()
    authenticate(face, core)
    before = face.state(core)
    answer = face.call(core, request("POST", path, body, headers=headers))
    assert answer.status == 403
    assert "refused" in body_of(answer)["error"]
    assert face.state(core) == before


@pytest.mark.parametrize(("path", "body"), STATE_CHANGES, ids=["token", "report", "logout"])
@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Type", "text/plain"), ("Origin", ORIGIN)],
        [("Content-Type", "application/x-www-form-urlencoded"), ("Origin", ORIGIN)],
        [("Content-Type", "multipart/form-data; boundary=x"), ("Origin", ORIGIN)],
        [("Origin", ORIGIN)],
        [JSON_TYPE, JSON_TYPE, ("Origin", ORIGIN)],
        [("Content-Type", "application/jsonp"), ("Origin", ORIGIN)],
    ],
    ids=["text", "form", "multipart", "none", "two", "jsonp"],
)
def test_a_state_change_that_is_not_declared_json_is_415(
    face: Face, path: str, body: Any, headers: list[tuple[str, str]]
) -> None:
    core = face.activation()
    authenticate(face, core)
    before = face.state(core)
    answer = face.call(core, request("POST", path, body, headers=headers))
    assert (answer.status, body_of(answer)["error"]) == (
        415,
        "the body must be JSON (Content-Type: application/json)",
    )
    assert face.state(core) == before


@pytest.mark.parametrize(
    ("headers", "host"),
    [
        ([("Origin", ORIGIN)], HOST),
        ([("Origin", "HTTP://Brand.Test:8000")], HOST),
        ([("Origin", "http://brand.test")], "brand.test:80"),  # the default port, either way
        ([("Origin", "http://brand.test:80")], "brand.test"),
        ([("Origin", "http://[::1]:8000")], "[::1]:8000"),
        ([("Sec-Fetch-Site", "same-origin")], HOST),
        ([("Sec-Fetch-Site", "none")], HOST),  # typed in the address bar, or not a browser
        ([], HOST),  # not a browser (curl, a server-side client): no origin to check
    ],
    ids=[
        "same",
        "case",
        "default-port-host",
        "default-port-origin",
        "ipv6",
        "fetch-same",
        "fetch-none",
        "nothing",
    ],
)
def test_a_same_origin_json_state_change_passes(
    face: Face, headers: list[tuple[str, str]], host: str
) -> None:
    core = face.activation()
    made = request("POST", "/activation/token", {"flow": "f1"}, headers=[*headers, JSON_TYPE])
    answer = face.call(core, made._replace(host=host))
    assert "authenticationOption" in body_of(answer)
    charset = [("Origin", ORIGIN), ("Content-Type", "application/json; charset=utf-8")]
    done = {"flow": "f1", "activation": SUCCESS}
    report = face.call(core, request("POST", "/activation/report", done, headers=charset))
    assert body_of(report)["state"] == "authenticated"


def test_allowed_origins_widen_the_rule(face: Face) -> None:
    core = face.activation(allowed_origins=("https://www.brand.example", "http://localhost:3000/"))
    for origin in ("https://www.brand.example", "https://WWW.brand.example:443", ORIGIN):
        made = request("POST", "/activation/logout", {}, headers=[("Origin", origin), JSON_TYPE])
        assert face.call(core, made).status == 200, origin
    for origin in ("http://www.brand.example", "https://brand.example", "http://localhost:3001"):
        made = request("POST", "/activation/logout", {}, headers=[("Origin", origin), JSON_TYPE])
        assert face.call(core, made).status == 403, origin
    with pytest.raises(ValueError, match="not an origin"):
        face.activation(allowed_origins=("*",))
    with pytest.raises(ValueError, match="not an origin"):
        face.activation(allowed_origins=("https://brand.example/path",))
    with pytest.raises(TypeError, match="not one string"):
        face.activation(allowed_origins="https://brand.example")


def test_reads_are_not_state_changes(face: Face) -> None:
    """GET state and the snippet need no origin (a cross-origin page cannot read the answer)."""
    core = face.activation()
    for path in ("/activation/state", "/activation/snippet.js"):
        answer = face.call(core, request("GET", path, headers=[("Origin", "http://evil.test")]))
        assert answer.status == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/activation/token", 405),
        ("PUT", "/activation/report", 405),
        ("DELETE", "/activation/logout", 405),
        ("POST", "/activation/state", 405),
        ("POST", "/activation/snippet.js", 405),
        ("GET", "/activation/nothing", 404),
    ],
)
def test_wrong_methods_and_paths_are_json_4xx(
    face: Face, method: str, path: str, status: int
) -> None:
    answer = face.call(face.activation(), request(method, path, {}))
    assert answer.status == status
    assert body_of(answer)["error"]
    if status == 405:
        assert any(name == "Allow" for name, _ in answer.headers)


@pytest.mark.parametrize(
    ("headers", "raw", "status"),
    [
        ([JSON_TYPE, ("Origin", ORIGIN)], b'{"flow": "' + b"a" * MAX_BODY + b'"}', 413),
        ([JSON_TYPE, ("Origin", ORIGIN), ("Content-Length", "999999")], b'{"flow":"f"}', 413),
        ([JSON_TYPE, ("Origin", ORIGIN), ("Content-Length", "ten")], b'{"flow":"f"}', 400),
        ([JSON_TYPE, ("Origin", ORIGIN), ("Content-Length", "১২")], b'{"flow":"f"}', 400),
        (
            [JSON_TYPE, ("Origin", ORIGIN), ("Content-Length", "12"), ("Content-Length", "12")],
            b'{"flow":"f"}',
            400,
        ),
        ([JSON_TYPE, ("Origin", ORIGIN)], b"\xff\xfe{}", 400),
        ([JSON_TYPE, ("Origin", ORIGIN)], b'{"flow": "\\ud800"}', 400),
        ([JSON_TYPE, ("Origin", ORIGIN)], b'{"flow": NaN}', 400),
        ([JSON_TYPE, ("Origin", ORIGIN)], b"", 400),
    ],
    ids=[
        "huge",
        "declared-huge",
        "length-text",
        "length-bengali-digits",
        "two-lengths",
        "utf16",
        "lone-surrogate",
        "nan",
        "empty",
    ],
)
def test_bodies_the_core_refuses(
    face: Face, headers: list[tuple[str, str]], raw: bytes, status: int
) -> None:
    core = face.activation()
    answer = face.call(core, request("POST", "/activation/token", headers=headers, raw=raw))
    assert answer.status == status
    assert body_of(answer)["error"]
    assert face.state(core)["state"] == "unauthenticated"


@pytest.mark.parametrize("visitor", [None, ""], ids=["none", "empty"])
def test_no_visitor_is_401_on_every_visitor_route(face: Face, visitor: str | None) -> None:
    core = face.activation()
    for method, path in (
        ("POST", "/activation/token"),
        ("POST", "/activation/report"),
        ("POST", "/activation/logout"),
        ("GET", "/activation/state"),
    ):
        answer = face.call(core, request(method, path, {"flow": "f1"}, visitor=visitor))
        assert answer.status == 401, path


def test_a_visitor_id_the_tracker_refuses_is_400(face: Face) -> None:
    core = face.activation(visitor_id=lambda _r: "a\x00b")
    answer = face.call(core, request("POST", "/activation/token", {"flow": "f1"}))
    assert answer.status == 400
    assert "control characters" in body_of(answer)["error"]
    core = face.activation(visitor_id=lambda _r: 12)
    assert face.call(core, request("GET", "/activation/state")).status == 400


def test_async_host_callables_work_on_both_faces(face: Face) -> None:
    async def visitor_id(_request: Any) -> str:
        return "v-async"

    async def token_provider(_request: Any) -> Any:
        return partial(face.issuer.issue, "user")

    core = face.activation(visitor_id=visitor_id, token_provider=token_provider)
    answer = face.call(core, request("POST", "/activation/token", {"flow": "f1"}))
    assert "authenticationOption" in body_of(answer)


# -- never a 500: the last resort -----------------------------------------------------------------

SECRET = "eyJhbGciOiJSUzI1NiJ9.secret-looking"


def test_a_visitor_callable_that_raises_is_400_and_logs_its_type_only(
    face: Face, logs: list[dict[str, Any]]
) -> None:
    def choking(_request: Any) -> str:
        raise UnicodeDecodeError("utf-8", SECRET.encode(), 0, 1, SECRET)

    answer = face.call(face.activation(visitor_id=choking), request("GET", "/activation/state"))
    assert (answer.status, body_of(answer)) == (
        400,
        {"error": "the visitor cookie could not be read"},
    )
    (logged,) = [entry for entry in logs if entry["event"] == "activation.http_error"]
    assert logged["error_type"] == "UnicodeDecodeError"
    assert SECRET not in str(logs)


def test_anything_that_escapes_is_the_last_resort_400_with_its_type_logged(
    face: Face, logs: list[dict[str, Any]]
) -> None:
    class Broken:
        policy = face.tracker.policy

        def token_request(self, *_args: Any) -> Any:
            raise RuntimeError(SECRET)

        async def atoken_request(self, *_args: Any) -> Any:
            raise RuntimeError(SECRET)

    broken: Any = Broken()
    if face.kind == "async":
        broken.token_request = broken.atoken_request
    core = face.activation(tracker=broken)
    answer = face.call(core, request("POST", "/activation/token", {"flow": "f1"}))
    assert (answer.status, body_of(answer)) == (400, {"error": LAST_RESORT})
    (logged,) = [entry for entry in logs if entry["event"] == "activation.http_error"]
    assert (logged["error_type"], logged["route"]) == ("RuntimeError", "/activation/token")
    assert SECRET not in str(logs)


def test_a_retry_after_from_the_tracker_reaches_the_header() -> None:
    class Throttled:
        status_code = 429
        retry_after = 17.2

        def to_dict(self) -> dict[str, Any]:
            return {"activate": False, "reason": "too many tokens"}

    answer = token_response(Throttled())  # type: ignore[arg-type]
    assert answer.status == 429
    assert ("Retry-After", "18") in answer.headers  # whole seconds, rounded up
    assert body_of(answer) == {"activate": False, "reason": "too many tokens"}

    class Named(Throttled):
        headers = {"Retry-After": "5"}  # noqa: RUF012

    assert ("Retry-After", "5") in token_response(Named()).headers  # type: ignore[arg-type]


# -- the inspector and /metrics: closed by default ------------------------------------------------

INSPECTOR_SECRET = b"the inspector's secret, 32 bytes"
NAMES = References(INSPECTOR_SECRET)
INSPECTOR_PATHS = ["/inspect", "/inspect/visitors", "/inspect/visitor/{handle}", "/metrics"]


def inspector_request(path: str, **kw: Any) -> HttpRequest:
    return request("GET", path.format(handle=NAMES.handle("v1")), visitor=None, **kw)


@pytest.mark.parametrize("path", INSPECTOR_PATHS)
@pytest.mark.parametrize(
    ("client", "headers", "status"),
    [
        ("127.0.0.1", [], 200),
        ("127.8.9.10", [], 200),
        ("::1", [], 200),
        ("::ffff:127.0.0.1", [], 200),
        ("203.0.113.9", [], 403),
        ("10.0.0.2", [], 403),
        ("::ffff:10.0.0.2", [], 403),
        ("testclient", [], 403),
        (None, [], 403),  # a Unix socket: a proxy's, most likely
        ("127.0.0.1", [("X-Forwarded-For", "203.0.113.9")], 403),
        ("127.0.0.1", [("X-Forwarded-For", "127.0.0.1")], 403),
        ("127.0.0.1", [("Forwarded", "for=203.0.113.9")], 403),
        ("127.0.0.1", [("X-Real-IP", "203.0.113.9")], 403),
    ],
    ids=[
        "loopback",
        "loopback-net",
        "ipv6-loopback",
        "mapped-loopback",
        "remote",
        "private",
        "mapped-private",
        "not-an-address",
        "unknown",
        "proxied",
        "proxied-claims-local",
        "forwarded",
        "real-ip",
    ],
)
def test_without_a_guard_only_loopback_clients_get_the_inspector(
    face: Face, path: str, client: str | None, headers: list[tuple[str, str]], status: int
) -> None:
    authenticate(face, face.activation())
    answer = face.call(face.inspector(), inspector_request(path, client=client, headers=headers))
    assert answer.status == status, answer
    if status == 403:
        assert body_of(answer)["error"].startswith("the inspector and /metrics answer loopback")
        assert b"authenticated" not in answer.body


@pytest.mark.parametrize("path", INSPECTOR_PATHS)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_with_a_guard_its_answer_decides(face: Face, path: str, kind: str) -> None:
    authenticate(face, face.activation())
    seen: list[Any] = []

    def admin(request: HttpRequest) -> bool:
        seen.append(request)
        return request.headers.get("x-admin") == "yes"

    async def async_admin(request: HttpRequest) -> bool:
        return admin(request)

    core = face.inspector(guard=admin if kind == "sync" else async_admin)
    remote = [("X-Admin", "yes"), ("X-Forwarded-For", "198.51.100.4")]
    let_in = face.call(core, inspector_request(path, client="203.0.113.9", headers=remote))
    assert let_in.status == 200
    assert isinstance(seen[0], HttpRequest)
    kept_out = face.call(core, inspector_request(path, client="127.0.0.1", headers=[]))
    assert kept_out.status == 403  # the guard alone decides, even for loopback
    assert body_of(kept_out) == {"error": "the inspector is closed to this request"}


def test_a_guard_that_raises_refuses_and_logs_its_type(
    face: Face, logs: list[dict[str, Any]]
) -> None:
    def broken(_request: Any) -> bool:
        raise PermissionError(SECRET)

    answer = face.call(face.inspector(guard=broken), inspector_request("/inspect/visitors"))
    assert answer.status == 403
    assert [e["error_type"] for e in logs if e["event"] == "activation.http_error"] == [
        "PermissionError"
    ]
    assert SECRET not in str(logs)


def test_the_inspector_content_on_both_faces(face: Face) -> None:
    authenticate(face, face.activation())
    core = face.inspector()
    page = face.call(core, inspector_request("/inspect"))
    assert page.content_type == "text/html; charset=utf-8"
    (visitor,) = body_of(face.call(core, inspector_request("/inspect/visitors")))["visitors"]
    assert (visitor["ref"], visitor["state"]) == (NAMES.ref("v1"), "authenticated")
    detail = body_of(face.call(core, inspector_request("/inspect/visitor/{handle}")))
    current = '<g class="state current" data-state="authenticated" data-kind="authenticated">'
    assert current in detail["svg"]
    assert face.call(core, inspector_request("/inspect/visitor/nothex")).status == 404
    assert face.call(core, inspector_request("/inspect/visitor/000000000000")).status == 404
    assert face.call(core, inspector_request("/inspect/other")).status == 404
    posted = face.call(core, inspector_request("/inspect/visitors")._replace(method="POST"))
    assert posted.status == 405
    scrape = face.call(core, inspector_request("/metrics"))
    assert b'trigger="activation_succeeded"' in scrape.body


# -- the small parts ------------------------------------------------------------------------------


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    headers = Headers([("Set-Thing", "a"), ("set-thing", "b"), ("Cookie", "sa_user=secret")])
    assert headers.get("SET-THING") == "a"
    assert headers.get_all("set-thing") == ["a", "b"]
    assert "cookie" in headers
    assert headers.get("missing", "x") == "x"
    assert "secret" not in repr(headers)
    assert "secret" not in repr(HttpRequest("POST", "/x", headers, b'{"token": "secret"}'))
    raw = Headers.from_latin1([(b"Origin", b"a"), (b"x", b"\xe9"), (b"origin", b"b")])
    assert raw.get_all("ORIGIN") == ["a", "b"]
    assert (raw.get("x"), raw.count("origin"), raw.count("x")) == ("é", 2, 1)
    assert sorted(raw) == [("origin", "a"), ("origin", "b"), ("x", "é")]
    single = Headers.from_latin1([(b"Content-Type", b"application/json")])
    assert single.get("content-type") == "application/json"


@pytest.mark.parametrize(
    ("client", "local"),
    [("127.0.0.1", True), ("::1", True), ("fe80::1%eth0", False), ("localhost", False)],
)
def test_is_local(client: str, local: bool) -> None:
    assert is_local(HttpRequest("GET", "/", Headers(), client=client)) is local


def test_cookies_the_library_sets() -> None:
    assert cookie_header("sa_visitor", "ab12", secure=False) == (
        "Set-Cookie",
        "sa_visitor=ab12; Path=/; HttpOnly; SameSite=Lax",
    )
    assert cookie_header("sa_user", "", secure=True, max_age=0)[1] == (
        "sa_user=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure"
    )
    bad: list[Callable[[], Any]] = [
        lambda: cookie_header("sa user", "x", secure=True),
        lambda: cookie_header("sa_user", "x; Domain=evil", secure=True),
    ]
    for call in bad:
        with pytest.raises(ValueError, match="plain tokens"):
            call()

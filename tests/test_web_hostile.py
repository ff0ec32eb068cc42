"""Hostile visitors against the Starlette adapter and the reference host, in-process.

- a state change from another origin, or not declared JSON, is refused and changes nothing;
- the inspector and /metrics are closed to non-loopback clients unless the host's guard admits;
- the reference host's sign-in and sign-out follow the same rules, and its cookies are
  HttpOnly, SameSite=Lax, and Secure over HTTPS; a non-ASCII cookie is not a 500;
- a fuzz (hypothesis) over methods, headers (repeated, non-ASCII, control characters, huge),
  cookies, bodies and queries, sent as raw ASGI messages (what a server hands the app) to
  every route of both apps: never a 500, never the last resort, always a JSON refusal.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.testclient import TestClient

from policies import DefensivePolicy
from statemachine import AsyncActivationTracker
from statemachine.stores import MemoryStore
from statemachine.tokens import TokenIssuer
from statemachine.web import MAX_BODY, activation_routes, inspector_routes
from statemachine.web.http import LAST_RESORT
from statemachine.web.inspector import References
from statemachine.web.reference import (
    ENV_KEYS,
    ENV_POLICY,
    ENV_SECRET,
    USER_COOKIE,
    VISITOR_COOKIE,
    Cookies,
    create_app,
    write_keys,
)
from tests.web_apps import http_scope, starlette_host

LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.9", 50000)
BASE = "http://127.0.0.1:8000"
SAME = {"origin": BASE}
SUCCESS = {
    "authentication": {
        "option": {"type": "SECURED_AUTHENTICATION"},
        "status": "authentication-success",
    }
}

INSPECTOR_SECRET = b"the inspector's secret, 32 bytes"
NAMES = References(INSPECTOR_SECRET)


def host_app(issuer: TokenIssuer, **inspector: Any) -> Starlette:
    """A host as the README writes one: the visitor and the user from cookies."""
    tracker = AsyncActivationTracker(DefensivePolicy(), MemoryStore())
    return starlette_host(
        tracker,
        issuer,
        identity="cookies",
        inspector={"secret": INSPECTOR_SECRET, **inspector},
    )


def client_for(app: Any, *, client: tuple[str, int] = LOOPBACK, base: str = BASE) -> Any:
    made = TestClient(app, base_url=base, client=client)
    made.cookies.set("visitor", "v1")
    made.cookies.set("user", "visitor-42")
    return made


def authenticate(client: Any, prefix: str = "/app/activation") -> None:
    token = client.post(f"{prefix}/token", json={"flow": "f1"}, headers=SAME)
    assert "authenticationOption" in token.json(), token.text
    done = client.post(f"{prefix}/report", json={"flow": "f1", "activation": SUCCESS}, headers=SAME)
    assert done.json()["state"] == "authenticated"


def state(client: Any, prefix: str = "/app/activation") -> str:
    return str(client.get(f"{prefix}/state").json()["state"])


# -- the Starlette adapter ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"origin": "http://127.0.0.1:8001"}, 403),
        ({"origin": "null"}, 403),
        ({"sec-fetch-site": "cross-site"}, 403),
        ({**SAME, "content-type": "text/plain"}, 415),
        ({**SAME, "content-type": "application/x-www-form-urlencoded"}, 415),
    ],
    ids=["sibling-port", "null", "fetch-cross-site", "text", "form"],
)
def test_starlette_refuses_cross_origin_and_non_json_state_changes(
    issuer: TokenIssuer, headers: dict[str, str], status: int
) -> None:
    with client_for(host_app(issuer)) as client:
        authenticate(client)
        for path, body in (
            ("/app/activation/logout", {}),
            ("/app/activation/token", {"flow": "f2"}),
            ("/app/activation/report", {"flow": "f1", "activation": SUCCESS}),
        ):
            content = json.dumps(body).encode()
            sent = {"content-type": "application/json", **headers}
            answer = client.post(path, content=content, headers=sent)
            assert answer.status_code == status, (path, answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert state(client) == "authenticated"
        assert client.post("/app/activation/logout", json={}, headers=SAME).status_code == 200
        assert state(client) == "unauthenticated"


def test_starlette_answers_wrong_methods_in_json(issuer: TokenIssuer) -> None:
    with client_for(host_app(issuer)) as client:
        answer = client.get("/app/activation/token")
        assert (answer.status_code, answer.headers["allow"]) == (405, "POST")
        assert answer.json() == {"error": "method not allowed"}
        assert client.head("/app/activation/snippet.js").status_code == 200
        assert client.delete("/app/inspect/visitors").status_code == 405


INSPECTOR = [
    "/app/inspect",
    "/app/inspect/visitors",
    "/app/inspect/visitor/{ref}",  # a visitor's handle
    "/app/metrics",
]


@pytest.mark.parametrize("path", INSPECTOR)
def test_starlette_inspector_is_closed_to_remote_and_proxied_clients(
    issuer: TokenIssuer, path: str
) -> None:
    app = host_app(issuer)
    path = path.format(ref=NAMES.handle("v1"))
    with client_for(app) as local, client_for(app, client=REMOTE) as remote:
        authenticate(local)
        assert local.get(path).status_code == 200
        for answer in (
            remote.get(path),
            local.get(path, headers={"x-forwarded-for": "203.0.113.9"}),
            local.get(path, headers={"forwarded": "for=203.0.113.9;proto=https"}),
        ):
            assert answer.status_code == 403
            assert "loopback" in answer.json()["error"]
            assert "authenticated" not in answer.text


@pytest.mark.parametrize("path", INSPECTOR)
def test_starlette_inspector_guard_decides(issuer: TokenIssuer, path: str) -> None:
    async def admin(request: Request) -> bool:  # the host's own admin check
        return request.headers.get("authorization") == "Bearer admin-secret"

    app = host_app(issuer, guard=admin)
    path = path.format(ref=NAMES.handle("v1"))
    with client_for(app) as local, client_for(app, client=REMOTE) as remote:
        authenticate(local)
        admitted = remote.get(path, headers={"authorization": "Bearer admin-secret"})
        assert admitted.status_code == 200
        assert local.get(path).status_code == 403
        assert remote.get(path, headers={"authorization": "Bearer guess"}).status_code == 403


# -- the reference host ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    keys = tmp_path_factory.mktemp("keys")
    write_keys(Path(keys))
    return {ENV_KEYS: str(keys), ENV_POLICY: "defensive", ENV_SECRET: "ab" * 32}


@pytest.fixture
def reference(reference_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Starlette:
    for name, value in reference_env.items():
        monkeypatch.setenv(name, value)
    return create_app()


def set_cookies(answer: Any) -> dict[str, str]:
    return {line.split("=", 1)[0]: line for line in answer.headers.get_list("set-cookie")}


def test_the_reference_host_routes_each_path_once_the_token_route_first(
    reference: Starlette,
) -> None:
    """Starlette tries routes in order: the hot path first is only safe while no two share
    a path (a later one would never answer)."""
    paths = [getattr(route, "path", None) for route in reference.routes]
    assert len(paths) == len(set(paths))
    assert paths[0] == "/activation/token"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_reference_cookies_are_httponly_lax_and_secure_over_https(
    reference: Starlette, scheme: str
) -> None:
    with TestClient(reference, base_url=f"{scheme}://127.0.0.1:8000", client=LOOPBACK) as client:
        page = set_cookies(client.get("/"))
        origin = {"origin": f"{scheme}://127.0.0.1:8000"}
        login = client.post("/login", json={"user_id": "visitor-42"}, headers=origin)
        assert login.status_code == 204
        signout = client.post("/signout", json={}, headers=origin)
        assert signout.status_code == 204
        made = [page[VISITOR_COOKIE], set_cookies(login)[USER_COOKIE]]
        gone = set_cookies(signout)[USER_COOKIE]
    assert "Max-Age=0" in gone
    for cookie in [*made, gone]:
        attributes = [part.strip() for part in cookie.split(";")]
        assert "HttpOnly" in attributes
        assert "SameSite=Lax" in attributes
        assert ("Secure" in attributes) is (scheme == "https")


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/login", {"origin": "http://127.0.0.1:8001"}, 403),
        ("/login", {"sec-fetch-site": "same-site"}, 403),
        ("/login", {**SAME, "content-type": "application/x-www-form-urlencoded"}, 415),
        ("/signout", {"origin": "http://evil.test"}, 403),
        ("/signout", {**SAME, "content-type": "text/plain"}, 415),
    ],
)
def test_reference_sign_in_and_out_are_same_origin_json(
    reference: Starlette, path: str, headers: dict[str, str], status: int
) -> None:
    with TestClient(reference, base_url=BASE, client=LOOPBACK) as client:
        sent = {"content-type": "application/json", **headers}
        answer = client.post(path, content=b'{"user_id": "mallory"}', headers=sent)
        assert answer.status_code == status
        assert "set-cookie" not in answer.headers
        assert answer.json()["error"]


def test_reference_refuses_a_user_id_that_is_not_unicode(reference: Starlette) -> None:
    with TestClient(reference, base_url=BASE, client=LOOPBACK) as client:
        sent = {"content-type": "application/json", **SAME}
        answer = client.post("/login", content=b'{"user_id": "a\\ud800"}', headers=sent)
        assert answer.status_code == 400


@pytest.mark.parametrize(
    "user_id",
    [" ", "\u00a0", "a\u2028b", "\u2029"],
    ids=["space", "nbsp", "line-separator", "paragraph-separator"],
)
def test_reference_refuses_a_user_id_no_token_could_carry(
    reference: Starlette, user_id: str
) -> None:
    """A sign-in the issuer would refuse is refused at once, not accepted and then turned
    into a provider failure that blocks the visitor on its first token request."""
    with TestClient(reference, base_url=BASE, client=LOOPBACK) as client:
        sent = {"content-type": "application/json", **SAME}
        body = json.dumps({"user_id": user_id}).encode()
        answer = client.post("/login", content=body, headers=sent)
        assert answer.status_code == 400, answer.text
        assert "set-cookie" not in answer.headers


@pytest.mark.parametrize("user_id", ["é" * 255, "\U0001d54f" * 255, "\u00e9" + "x" * 254])
def test_a_long_non_ascii_sign_in_is_signed_in(reference: Starlette, user_id: str) -> None:
    """Any user id the sign-in accepts (255 characters of any script) makes a cookie the
    host can read back: the visitor gets a token, not the answer for nobody signed in."""
    with TestClient(reference, base_url=BASE, client=LOOPBACK) as client:
        client.get("/")  # the visitor cookie
        sent = {"content-type": "application/json", **SAME}
        login = client.post("/login", content=json.dumps({"user_id": user_id}), headers=sent)
        assert login.status_code == 204, login.text
        assert len(client.cookies[USER_COOKIE]) <= 2048
        token = client.post("/activation/token", json={"flow": "f1"}, headers=SAME)
        assert "authenticationOption" in token.json(), token.text


@pytest.mark.parametrize(
    "cookie",
    ["sa_user=é.x".encode(), b"sa_user=\xff\xfe.\x01", "sa_user=ünïcødé".encode("latin-1")],
)
def test_a_non_ascii_sa_user_cookie_gets_the_policy_not_a_500(
    reference: Starlette, cookie: bytes
) -> None:
    answer = asyncio.run(
        asgi(
            reference,
            "POST",
            "/activation/token",
            [
                (b"cookie", b"sa_visitor=" + b"a" * 32 + b"; " + cookie),
                (b"content-type", b"application/json"),
            ],
            b'{"flow": "f1"}',
        )
    )
    assert answer[0] == 200
    assert json.loads(answer[2])["activate"] is False


def test_the_signed_cookie_refuses_forgeries() -> None:
    cookies = Cookies(b"k" * 32)
    good = cookies.sign("visitor-42", False)
    assert cookies.read(good) == ("visitor-42", False)
    for bad in (good + "0", "é" + good, good.replace(".", ".é"), "x" * 3000, "", None):
        assert cookies.read(bad) is None


# -- the fuzz -------------------------------------------------------------------------------------


async def asgi(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    query: bytes = b"",
    client: tuple[str, int] | None = LOOPBACK,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request as a server hands it to the app: raw header bytes, the body in two parts."""
    scope = http_scope(method, path, headers, query=query, client=client)
    half = len(body) // 2
    messages = [
        {"type": "http.request", "body": body[:half], "more_body": True},
        {"type": "http.request", "body": body[half:], "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], list(start.get("headers", [])), content


HEADER_NAMES = [
    b"origin",
    b"content-type",
    b"content-length",
    b"cookie",
    b"sec-fetch-site",
    b"host",
    b"x-forwarded-for",
    b"forwarded",
    b"authorization",
    b"accept",
]
COOKIE_NAMES = [b"visitor", b"user", VISITOR_COOKIE.encode(), USER_COOKIE.encode(), b"x"]
any_byte = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
header_value = st.one_of(
    any_byte,
    st.sampled_from(
        [
            b"application/json",
            b"application/json; charset=utf-8",
            b"text/plain",
            b"multipart/form-data; boundary=--x",
            BASE.encode(),
            b"null",
            b"cross-site",
            b"same-origin",
            b"99999999999999999999999",
            b"-1",
            "é".encode(),
            b"\x00\x01\x7f",
            b"a" * 20_000,
            "ü".encode() * 5_000,
        ]
    ),
)
cookie_header = st.lists(
    st.tuples(st.sampled_from(COOKIE_NAMES), any_byte), min_size=1, max_size=4
).map(lambda pairs: b"; ".join(name + b"=" + value for name, value in pairs))
headers_strategy = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(HEADER_NAMES), header_value),
        st.tuples(st.just(b"cookie"), cookie_header),
        st.tuples(st.binary(min_size=1, max_size=12).map(bytes.lower), any_byte),
    ),
    max_size=8,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"flow": st.text(max_size=20), "activation": json_values, "user_id": st.text(max_size=20)}
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"authenticationOption": st.fixed_dictionaries({"type": st.text(), "token": st.text()})}
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[" * 5000, b"{" * (MAX_BODY + 1), b'{"flow": "f1"}', b"\xef\xbb\xbf{}"]),
)
METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]
ADAPTER_ROUTES = [
    ("POST", "/app/activation/token"),
    ("POST", "/app/activation/report"),
    ("POST", "/app/activation/logout"),
    ("GET", "/app/activation/state"),
    ("GET", "/app/activation/snippet.js"),
    ("GET", "/app/inspect"),
    ("GET", "/app/inspect/visitors"),
    ("GET", "/app/inspect/visitor/{ref}"),
    ("GET", "/app/metrics"),
]
REFERENCE_ROUTES = [
    ("GET", "/"),
    ("POST", "/login"),
    ("POST", "/signout"),
    ("GET", "/tag.js"),
    ("POST", "/platform/activate"),
    *((method, path.removeprefix("/app")) for method, path in ADAPTER_ROUTES),
]
# What a real page sends, each part present or not, before the hostile extras: so that the
# fuzz gets past the first refusal as often as it hits it.
plausible = st.lists(
    st.sampled_from(
        [
            (b"origin", BASE.encode()),
            (b"content-type", b"application/json"),
            (b"cookie", b"visitor=v1; user=visitor-42"),
            (b"cookie", b"sa_visitor=" + b"0123456789abcdef" * 2),
            (b"sec-fetch-site", b"same-origin"),
        ]
    ),
    unique=True,
)


def check_answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    assert status < 500, (status, body[:200])
    kind = dict(headers).get(b"content-type", b"")
    if status >= 400:
        assert kind == b"application/json", (status, kind)
        refusal = json.loads(body)
        assert refusal.get("error") or refusal.get("reason"), refusal
        assert refusal.get("error") != LAST_RESORT, refusal


def fuzz(
    app: Any, routes: list[tuple[str, str]], data: st.DataObject, loop: asyncio.AbstractEventLoop
) -> None:
    method, template = data.draw(st.sampled_from(routes))
    printable = st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/")
    ref = data.draw(st.one_of(st.just(NAMES.handle("v1")), st.text(printable, min_size=1)))
    path = template.format(ref=ref)  # always one of our routes (not the router's own 404)
    method = data.draw(st.sampled_from([method] * 6 + METHODS))
    headers = data.draw(plausible) + data.draw(headers_strategy)
    body = data.draw(bodies)
    query = data.draw(st.binary(max_size=50))
    client = data.draw(st.sampled_from([LOOPBACK, REMOTE, None]))
    answer = loop.run_until_complete(asgi(app, method, path, headers, body, query, client))
    event(f"{answer[0]}")
    check_answer(*answer)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    made = asyncio.new_event_loop()
    yield made
    made.close()


@pytest.fixture
def adapter(issuer: TokenIssuer) -> Starlette:
    """One app for all of a fuzz's examples (hypothesis runs them in one test call)."""
    return host_app(issuer)


FUZZ = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data())
def test_fuzz_the_starlette_adapter_never_a_500(
    adapter: Starlette, loop: asyncio.AbstractEventLoop, data: st.DataObject
) -> None:
    fuzz(adapter, ADAPTER_ROUTES, data, loop)


@FUZZ
@given(data=st.data())
def test_fuzz_the_reference_host_never_a_500(
    reference: Starlette, loop: asyncio.AbstractEventLoop, data: st.DataObject
) -> None:
    fuzz(reference, REFERENCE_ROUTES, data, loop)


# -- the README's web sample, as written ----------------------------------------------------------


@pytest.fixture
def readme_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The README's web sample run as written, in a directory with its keys."""
    import re

    from statemachine.tokens.keys import generate_rsa, private_pem, public_pem

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (code,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, re.S)
        if "SessionMiddleware" in block and "app = Starlette(" in block
    ]
    keys = tmp_path / "keys"
    keys.mkdir()
    brand, platform = generate_rsa(), generate_rsa()
    (keys / "brand_private.pem").write_bytes(private_pem(brand))
    (keys / "platform_public.pem").write_bytes(public_pem(platform))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SESSION_SECRET", "s" * 64)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["app"]


def session_cookie(data: dict[str, str]) -> str:
    """A session as the app's own sign-in would write it (signed with the shared secret)."""
    import base64

    import itsdangerous

    payload = base64.b64encode(json.dumps(data).encode())
    return itsdangerous.TimestampSigner("s" * 64).sign(payload).decode()


def test_the_readme_sample_mints_only_for_a_signed_session(readme_app: Any) -> None:
    flow = {"flow": "f1"}
    with TestClient(readme_app, base_url=BASE, client=REMOTE) as client:
        for forged in ({"user_id": "victim"}, {"demo_user": "victim"}, {"session": "e30=.x.y"}):
            client.cookies.clear()
            for name, value in forged.items():
                client.cookies.set(name, value)
            answer = client.post("/activation/token", json=flow, headers=SAME)
            assert answer.json()["activate"] is False  # nobody signed in: the policy answers
        client.cookies.clear()
        client.cookies.set("session", session_cookie({"user_id": "visitor-42"}))
        answer = client.post("/activation/token", json=flow, headers=SAME)
        assert answer.json()["authenticationOption"]["type"] == "SECURED_AUTHENTICATION"
        assert "httponly" in answer.headers["set-cookie"].lower()  # the visitor joined the session
        assert client.get("/metrics").status_code == 403  # a remote client, not an admin
        client.cookies.clear()
        client.cookies.set("session", session_cookie({"role": "admin"}))
        assert client.get("/inspect/visitors").status_code == 200


# -- FastAPI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("way", ["include_router", "mount"])
def test_fastapi_hosts_the_same_routes_and_rules(issuer: TokenIssuer, way: str) -> None:
    fastapi = pytest.importorskip("fastapi")

    def visitor_id(request: Request) -> str | None:
        return request.cookies.get("visitor")

    def token_provider(request: Request) -> Any:
        user = request.cookies.get("user")
        return None if user is None else partial(issuer.issue, user)

    async def admin(request: Request) -> bool:
        return request.headers.get("authorization") == "Bearer admin-secret"

    tracker = AsyncActivationTracker(DefensivePolicy(), MemoryStore())
    app = fastapi.FastAPI()
    if way == "include_router":
        routes = activation_routes(tracker, visitor_id=visitor_id, token_provider=token_provider)
        app.include_router(fastapi.APIRouter(routes=routes))
        app.include_router(fastapi.APIRouter(routes=inspector_routes(tracker, guard=admin)))
    else:
        routes = activation_routes(
            tracker, visitor_id=visitor_id, token_provider=token_provider, prefix=""
        )
        app.mount("/activation", Starlette(routes=routes))
        app.mount("/inspect", Starlette(routes=inspector_routes(tracker, prefix="", guard=admin)))

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    with client_for(app) as client:
        authenticate(client, "/activation")
        answer = client.post("/activation/logout", json={}, headers={"origin": "http://evil.test"})
        assert answer.status_code == 403
        assert state(client, "/activation") == "authenticated"
        assert client.get("/activation/token").status_code == 405
        assert client.get("/inspect/visitors").status_code == 403
        admitted = client.get("/inspect/visitors", headers={"authorization": "Bearer admin-secret"})
        assert admitted.json()["visitors"][0]["state"] == "authenticated"
        assert client.get("/hello").json() == {"hello": "world"}
        assert client.post("/activation/logout", json={}, headers=SAME).status_code == 200
        assert state(client, "/activation") == "unauthenticated"


@pytest.mark.parametrize(
    "declared",
    # Unicode digits pass str.isdigit() but not int(): each once slipped to the last resort.
    [b"\xb2", b"1\xb2", b"\xb9\xb2\xb3", b" 12 ", b"-1", b"1e3", b"0x10", b"99999999999999999999"],
)
@pytest.mark.parametrize("route", ["/app/activation/token", "/app/activation/report"])
def test_a_content_length_that_is_not_a_plain_number_is_a_4xx(
    adapter: Starlette, loop: asyncio.AbstractEventLoop, declared: bytes, route: str
) -> None:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", declared),
        (b"cookie", b"sa_visitor=" + b"0123456789abcdef" * 2),
    ]
    status, answer_headers, body = loop.run_until_complete(
        asgi(adapter, "POST", route, headers, b'{"flow": "f1"}')
    )
    check_answer(status, answer_headers, body)
    assert 400 <= status < 500, (status, body)


# -- bodies that never finish -----------------------------------------------------------------


async def stalled(
    app: Any, first: bytes, trickle: bool
) -> tuple[int, list[tuple[bytes, bytes]], float, bytes]:
    """A POST whose body never ends: one part, then silence (or one byte every 50 ms, for
    ever), as a client holding its connection open would send it to the server."""
    scope = http_scope(
        "POST",
        "/app/activation/token",
        [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"cookie", b"visitor=v1; user=visitor-42"),
        ],
    )
    parts = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal parts
        parts += 1
        if parts == 1:
            return {"type": "http.request", "body": first, "more_body": True}
        if not trickle:
            await asyncio.sleep(3600)
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b" ", "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    began = asyncio.get_running_loop().time()
    await asyncio.wait_for(app(scope, receive, send), 60)
    loop_time = asyncio.get_running_loop().time() - began
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], list(start["headers"]), loop_time, body


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickling"])
def test_a_body_that_never_ends_is_answered_408_in_time(
    adapter: Starlette,
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
    logs: list[dict[str, Any]],
    trickle: bool,
) -> None:
    """A client that sends part of a body and then nothing (or a byte now and then) got no
    answer ever: the request waited on the server's channel for as long as the client
    liked. The body has ``BODY_TIMEOUT`` seconds to arrive, then the answer is 408, and
    the server is told to close the connection (the rest of the body never comes)."""
    from statemachine.web import routes

    monkeypatch.setattr(routes, "BODY_TIMEOUT", 1.0)
    status, headers, took, body = loop.run_until_complete(stalled(adapter, b'{"flow": "f', trickle))
    assert status == 408, (status, body)
    assert (b"connection", b"close") in headers
    assert json.loads(body)["error"]
    assert 0.9 <= took < 10, took
    assert not [line for line in logs if line.get("log_level") == "error"], logs


def test_a_client_gone_before_its_body_ended_is_no_error(
    adapter: Starlette, loop: asyncio.AbstractEventLoop, logs: list[dict[str, Any]]
) -> None:
    """Part of a body, then the server says the client hung up: nothing is sent (nobody is
    there), and nothing is logged as an error of ours (it was one, ``http_error``)."""
    scope = http_scope(
        "POST",
        "/app/activation/token",
        [(b"host", b"127.0.0.1:8000"), (b"cookie", b"visitor=v1; user=visitor-42")],
    )
    messages = [
        {"type": "http.request", "body": b'{"flow": "f', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    loop.run_until_complete(asyncio.wait_for(adapter(scope, receive, send), 60))
    assert not messages  # both were read: the endpoint saw the hang-up
    assert sent == []
    assert not [line for line in logs if line.get("log_level") == "error"], logs


# -- over a real socket: what the server does after our refusal ------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[Any]:
    from tests.web_host import Host

    host = Host()
    yield host
    host.stop()


@pytest.mark.parametrize(
    ("method", "path", "how", "status"),
    [
        ("POST", "/activation/token", "declared", b"413"),
        ("POST", "/activation/token", "chunked", b"413"),
        ("GET", "/activation/state", "declared", b"200"),
        ("PUT", "/activation/token", "chunked", b"405"),
    ],
    ids=["declared", "chunked", "get-with-a-body", "wrong-method-chunked"],
)
def test_a_body_left_unread_is_not_drained_by_the_server(
    served: Any, method: str, path: str, how: str, status: bytes
) -> None:
    """An answer given before the body's end: a body declared far over the cap, or chunked
    past it, refused 413 from what arrived; a GET's body, never read; a wrong method's,
    read only up to the cap. uvicorn then kept reading the rest to keep the connection
    alive: a client declaring a petabyte could feed the worker's event loop for as long as
    it liked (1 GB took 1.3 s of the worker's CPU). With ``Connection: close`` the server
    hangs up."""
    import socket
    import time

    connection = socket.create_connection(("127.0.0.1", served.port), timeout=30)
    try:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + b"Content-Type: application/json\r\nCookie: sa_visitor="
            + b"a" * 32
            + b"\r\n"
        )
        if how == "declared":
            connection.sendall(head + b"Content-Length: 1000000000000000\r\n\r\n")
        else:
            connection.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            connection.sendall(b"%x\r\n%s\r\n" % (MAX_BODY + 10, b"x" * (MAX_BODY + 10)))
        answer = connection.recv(65536)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert b"connection: close" in answer.lower()
        sent, began = 0, time.monotonic()
        chunk = b"x" * 65536 if how == "declared" else b"10000\r\n" + b"x" * 65536 + b"\r\n"
        with pytest.raises((ConnectionResetError, BrokenPipeError)):  # the server hung up
            while time.monotonic() - began < 20:
                connection.sendall(chunk)
                sent += len(chunk)
                assert sent < 256 * 1024 * 1024, "the server is still draining the body"
    finally:
        connection.close()


def test_a_request_without_a_body_keeps_its_connection(served: Any) -> None:
    """Only an answer that left a body unread closes: the page's polls and token requests
    keep one connection alive."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        for _ in range(3):
            connection.request(
                "GET", "/activation/state", headers={"Cookie": "sa_visitor=" + "b" * 32}
            )
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            assert answer.getheader("connection") is None
            connection.request(
                "POST",
                "/activation/token",
                body=b'{"flow": "f1"}',
                headers={"Content-Type": "application/json", "Cookie": "sa_visitor=" + "b" * 32},
            )
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            assert answer.getheader("connection") is None
    finally:
        connection.close()

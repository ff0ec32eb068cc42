"""The routes a host mounts, in-process (Starlette's TestClient): every bad input is a 4xx
JSON answer that changes nothing, a store failure is the policy's answer, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from policies import AnonymousFallbackPolicy, DefensivePolicy
from statemachine import AsyncActivationTracker
from statemachine.stores import MemoryStore, StoreError
from statemachine.tokens import TokenIssuer
from statemachine.web import MAX_BODY
from tests.web_apps import http_scope, starlette_host


def host_app(tracker: AsyncActivationTracker, issuer: TokenIssuer, **kw: Any) -> Starlette:
    """What a host writes: who the visitor is, and the signed-in user's token provider."""
    return starlette_host(tracker, issuer, identity="headers", activation=kw)


@pytest.fixture
def client(issuer: TokenIssuer) -> Iterator[TestClient]:
    tracker = AsyncActivationTracker(DefensivePolicy(), MemoryStore())
    with TestClient(
        host_app(tracker, issuer), base_url="http://127.0.0.1", client=LOOPBACK
    ) as made:
        made.tracker = tracker  # type: ignore[attr-defined]
        yield made


SIGNED = {"x-visitor": "v1", "x-user": "visitor-42"}
LOOPBACK = ("127.0.0.1", 50000)  # the inspector and /metrics answer loopback clients only


def test_mounted_routes_serve_the_flow(client: TestClient) -> None:
    reply = client.post("/app/activation/token", json={"flow": "f1"}, headers=SIGNED)
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "no-store"
    assert reply.json()["authenticationOption"]["type"] == "SECURED_AUTHENTICATION"
    other = client.post("/app/activation/token", json={"flow": "f2"}, headers=SIGNED)
    assert (other.status_code, other.json()) == (409, {"reason": "A login is already ongoing"})
    done = {
        "authentication": {
            "option": {"type": "SECURED_AUTHENTICATION"},
            "status": "authentication-success",
        }
    }
    report = client.post(
        "/app/activation/report", json={"flow": "f1", "activation": done}, headers=SIGNED
    )
    assert report.json() == {"state": "authenticated", "next": None, "accepted": True}
    state = client.get("/app/activation/state", headers=SIGNED).json()
    assert state["state"] == "authenticated"
    assert client.post("/app/activation/logout", json={}, headers=SIGNED).json() == {
        "state": "unauthenticated"
    }
    snippet = client.get("/app/activation/snippet.js")
    assert snippet.headers["content-type"].startswith("text/javascript")
    assert "SecuredActivation" in snippet.text
    metrics = client.get("/app/metrics").text
    assert 'trigger="activation_succeeded"' in metrics
    token = reply.json()["authenticationOption"]["token"]
    for path in ("/app/activation/state", "/app/inspect/visitors", "/app/metrics"):
        assert token not in client.get(path, headers=SIGNED).text


def test_nobody_signed_in_gets_the_policy(client: TestClient) -> None:
    """Defensive: not activated, said so, and no record written (a forged cookie costs a read)."""
    for flow in ("f1", "f2", "f3"):
        reply = client.post(
            "/app/activation/token", json={"flow": flow}, headers={"x-visitor": "v2"}
        )
        assert reply.status_code == 200
        assert reply.json() == {
            "activate": False,
            "reason": "The token provider could not produce a token",
            "signedIn": False,
        }
    assert len(client.tracker.store) == 0  # type: ignore[attr-defined]
    assert unchanged(client, "v2")["state"] == "unauthenticated"


def test_nobody_signed_in_activates_anonymously_under_the_anonymous_policy(
    issuer: TokenIssuer,
) -> None:
    tracker = AsyncActivationTracker(AnonymousFallbackPolicy(), MemoryStore())
    with TestClient(host_app(tracker, issuer), base_url="http://127.0.0.1") as client:
        who = {"x-visitor": "v3"}
        reply = client.post("/app/activation/token", json={"flow": "f1"}, headers=who)
        assert reply.json() == {
            "authenticationOption": {"type": "ANONYMOUS_AUTHENTICATION"},
            "signedIn": False,
        }
        done = {
            "authentication": {
                "option": {"type": "ANONYMOUS_AUTHENTICATION"},
                "status": "authentication-success",
            }
        }
        report = client.post(
            "/app/activation/report", json={"flow": "f1", "activation": done}, headers=who
        )
        assert report.json()["state"] == "anonymous"


def unchanged(client: TestClient, visitor: str = "v1") -> Any:
    return client.get("/app/activation/state", headers={"x-visitor": visitor}).json()


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        (
            {
                "content": b"flow=f1",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            415,
            "must be JSON",
        ),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        (
            {"content": b"[1, 2]", "headers": {"content-type": "application/json"}},
            400,
            "JSON object",
        ),
        (
            {
                "content": b'{"flow": "a", "flow": "b"}',
                "headers": {"content-type": "application/json"},
            },
            400,
            "not valid JSON",
        ),
        (
            {"content": b"[" * 5000 + b"]" * 5000, "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        ({"json": {"flow": 12}}, 400, "'flow' must be a string"),
        ({"json": {"flow": "a b"}}, 400, "flow id"),
        ({"json": {}}, 400, "'flow' must be a string"),
        (
            {
                "content": b'{"flow": "' + b"a" * MAX_BODY + b'"}',
                "headers": {"content-type": "application/json"},
            },
            413,
            "over 65536 bytes",
        ),
    ],
    ids=[
        "form",
        "not-json",
        "array",
        "duplicate-key",
        "deep",
        "flow-number",
        "flow-bad",
        "no-flow",
        "too-large",
    ],
)
def test_bad_token_requests_are_4xx_and_change_nothing(
    client: TestClient, kwargs: dict[str, Any], status: int, message: str
) -> None:
    before = unchanged(client)
    headers = {**SIGNED, **kwargs.pop("headers", {})}
    reply = client.post("/app/activation/token", headers=headers, **kwargs)
    assert reply.status_code == status
    assert message in reply.json()["error"]
    assert unchanged(client) == before


def test_a_lying_content_length_is_refused(client: TestClient) -> None:
    reply = client.post(
        "/app/activation/token",
        content=b'{"flow": "f1"}',
        headers={**SIGNED, "content-type": "application/json", "content-length": "999999"},
    )
    assert reply.status_code == 413


def test_no_visitor_is_401_everywhere(client: TestClient) -> None:
    for method, path in (
        ("post", "/app/activation/token"),
        ("post", "/app/activation/report"),
        ("post", "/app/activation/logout"),
        ("get", "/app/activation/state"),
    ):
        kwargs = {"json": {"flow": "f1"}} if method == "post" else {}
        reply = getattr(client, method)(path, **kwargs)
        assert reply.status_code == 401, path
        assert "visitor" in reply.json()["error"]


@pytest.mark.parametrize(
    "activation",
    [
        None,
        "ok",
        {"authentication": {"status": "great"}},
        {
            "authentication": {
                "option": {"type": "ANONYMOUS_AUTHENTICATION"},
                "status": "authentication-success",
            }
        },
    ],
    ids=["none", "text", "bad-status", "wrong-kind"],
)
def test_bad_reports_are_400_and_change_nothing(client: TestClient, activation: Any) -> None:
    client.post("/app/activation/token", json={"flow": "f1"}, headers=SIGNED)
    before = unchanged(client)
    reply = client.post(
        "/app/activation/report", json={"flow": "f1", "activation": activation}, headers=SIGNED
    )
    assert reply.status_code == 400
    assert reply.json()["error"]
    assert unchanged(client) == before


class DownStore:
    """A store whose every operation fails as a dead Redis does."""

    async def aload(self, key: str) -> Any:
        raise StoreError("redis read failed: ConnectionError")

    async def acompare_and_set(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError("redis write failed: ConnectionError")

    async def akeys(self, limit: int = 1000) -> Any:
        raise StoreError("redis scan failed: ConnectionError")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            DefensivePolicy(),
            {"activate": False, "reason": "Failed to fetch authentication with a server error"},
        ),
        (AnonymousFallbackPolicy(), {"authenticationOption": {"type": "ANONYMOUS_AUTHENTICATION"}}),
    ],
    ids=["defensive", "anonymous"],
)
def test_a_store_that_is_down_gets_the_policys_answer(
    issuer: TokenIssuer, policy: Any, expected: Any
) -> None:
    tracker = AsyncActivationTracker(policy, DownStore())
    with TestClient(
        host_app(tracker, issuer), base_url="http://127.0.0.1", client=LOOPBACK
    ) as client:
        reply = client.post("/app/activation/token", json={"flow": "f1"}, headers=SIGNED)
        assert (reply.status_code, reply.json()) == (200, expected)
        for method, path in (
            ("get", "/app/activation/state"),
            ("post", "/app/activation/logout"),
            ("get", "/app/inspect/visitors"),
        ):
            kwargs = {"json": {}} if method == "post" else {}
            answer = getattr(client, method)(path, headers=SIGNED, **kwargs)
            assert answer.status_code == 503
            assert "unavailable" in answer.json()["error"]


def test_inspector_lists_visitors_by_reference_only(client: TestClient) -> None:
    client.post("/app/activation/token", json={"flow": "f1"}, headers=SIGNED)
    listing = client.get("/app/inspect/visitors").json()
    (visitor,) = listing["visitors"]
    assert visitor["state"] == "activating"
    assert set(visitor) == {
        "ref",
        "handle",
        "state",
        "kind",
        "since",
        "attempts",
        "reason",
        "authenticated_until",
    }
    detail = client.get(f"/app/inspect/visitor/{visitor['handle']}").json()
    assert detail["ref"] == visitor["ref"]
    assert (
        '<g class="state current" data-state="activating" data-kind="in-flight">' in (detail["svg"])
    )
    assert client.get("/app/inspect/visitor/nothex").status_code == 404
    assert client.get(f"/app/inspect/visitor/{'A' * 60}").status_code == 404
    page = client.get("/app/inspect")
    assert page.headers["content-type"].startswith("text/html")


def test_the_inspector_shows_a_damaged_record_instead_of_failing(client: TestClient) -> None:
    client.post("/app/activation/token", json={"flow": "f1"}, headers=SIGNED)
    store = client.tracker.store  # type: ignore[attr-defined]
    assert store.compare_and_set("broken", 0, '{"format": 99}', 60)[0]
    listing = client.get("/app/inspect/visitors")
    assert listing.status_code == 200
    states = sorted(visitor["state"] for visitor in listing.json()["visitors"])
    assert states == ["activating", "damaged"]
    assert "broken" not in listing.text


def _raw_answer(app: Starlette, method: str, path: str, body: bytes) -> tuple[int, list[Any]]:
    """The status and the header pairs exactly as the adapter hands them to the server."""
    import asyncio

    started: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.append(message)

    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-visitor", b"v1"),
        (b"x-user", b"u1"),
    ]
    scope = http_scope(method, path, headers, client=LOOPBACK, server=("127.0.0.1", 80))
    asyncio.run(app(scope, receive, send))
    (start,) = started
    return start["status"], list(start["headers"])


def test_the_adapter_sends_the_cores_headers_as_they_are(issuer: TokenIssuer) -> None:
    """JSON answers' headers are encoded once and reused: what goes out must not differ."""
    app = host_app(AsyncActivationTracker(DefensivePolicy(), MemoryStore()), issuer)
    json_headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    body = b'{"flow":"f1"}'
    status, headers = _raw_answer(app, "POST", "/app/activation/token", body)
    assert status == 200
    assert headers[0][0] == b"content-length"
    assert headers[1:] == json_headers
    status, headers = _raw_answer(app, "GET", "/app/activation/token", b"")
    assert status == 405
    assert headers[1:] == [*json_headers, (b"allow", b"POST")]
    status, headers = _raw_answer(app, "GET", "/app/activation/snippet.js", b"")
    assert status == 200
    assert headers[1:] == [
        (b"content-type", b"text/javascript; charset=utf-8"),
        (b"x-content-type-options", b"nosniff"),
    ]

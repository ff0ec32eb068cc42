"""The inspector a support team uses, in-process: counts, lookup, keyed references, one
store read per visitor, remediations, colours, and the blocking face over the same core."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient

from policies import DefensivePolicy
from statemachine import ActivationTracker, AsyncActivationTracker, FailureReason, State
from statemachine.stores import MemoryStore
from statemachine.tokens import TokenIssuer
from statemachine.web import activation_routes, inspector_routes
from statemachine.web.http import Headers, HttpRequest, InspectorHttp
from statemachine.web.inspector import References, listing_body
from statemachine.web.svg import CURRENT, RESTING, diagram_svg, kind_of

LOOPBACK = ("127.0.0.1", 50000)
SECRET = b"a shared secret of the host, 32b"
VISITOR = "visitor-cookie-4f1c2a9e77d04b8b"  # long enough never to appear by chance
OK = {
    "authentication": {
        "option": {"type": "SECURED_AUTHENTICATION"},
        "status": "authentication-success",
    }
}


class CountingStore(MemoryStore):
    """A memory store that counts reads and scans: showing one visitor is one read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.scans = 0

    async def aload(self, key: str) -> Any:
        self.reads += 1
        return await super().aload(key)

    async def akeys(self, limit: int = 1_000) -> list[str]:
        self.scans += 1
        return await super().akeys(limit)


def app(tracker: AsyncActivationTracker, issuer: TokenIssuer, lookup: Any = None) -> Starlette:
    def visitor_id(request: Request) -> str | None:
        return request.headers.get("x-visitor")

    def token_provider(request: Request) -> Any:
        user = request.headers.get("x-user")
        return None if user is None else partial(issuer.issue, user)

    return Starlette(
        routes=[
            *activation_routes(tracker, visitor_id=visitor_id, token_provider=token_provider),
            Mount(
                "/admin",
                routes=inspector_routes(tracker, prefix="/inspect", secret=SECRET, lookup=lookup),
            ),
        ]
    )


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def client(issuer: TokenIssuer, store: CountingStore) -> Iterator[TestClient]:
    tracker = AsyncActivationTracker(DefensivePolicy(), store)
    users = {"alice": VISITOR}

    async def lookup(query: str) -> str | None:
        return users.get(query)

    with TestClient(
        app(tracker, issuer, lookup), base_url="http://127.0.0.1", client=LOOPBACK
    ) as made:
        yield made


def sign_in(client: TestClient, visitor: str, user: str, *, ok: bool = True) -> None:
    who = {"x-visitor": visitor, "x-user": user}
    assert client.post("/activation/token", json={"flow": "f1"}, headers=who).status_code == 200
    done = (
        OK
        if ok
        else {
            "authentication": {
                "option": {"type": "SECURED_AUTHENTICATION"},
                "status": "authentication-failure",
                "reason": "Failed to authenticate visitor from credentials: bad key",
            }
        }
    )
    client.post("/activation/report", json={"flow": "f1", "activation": done}, headers=who)


def test_counts_per_state_and_reason(client: TestClient) -> None:
    sign_in(client, VISITOR, "alice")
    sign_in(client, "visitor-2", "bob", ok=False)
    client.post(
        "/activation/token", json={"flow": "f9"}, headers={"x-visitor": "v3", "x-user": "c"}
    )
    body = client.get("/admin/inspect/visitors").json()
    counts = body["counts"]
    assert counts["visitors"] == 3
    assert counts["states"]["authenticated"] == 1
    assert counts["states"]["blocked"] == 1
    assert counts["states"]["activating"] == 1
    assert counts["kinds"] == {"authenticated": 1, "blocked": 1, "in-flight": 1}
    assert counts["reasons"] == {"INVALID_CREDENTIALS": 1}
    blocked = next(v for v in body["visitors"] if v["state"] == "blocked")
    assert blocked["reason"] == {
        "name": "INVALID_CREDENTIALS",
        "message": FailureReason.INVALID_CREDENTIALS.message,
        "remediation": FailureReason.INVALID_CREDENTIALS.remediation,
    }
    assert VISITOR not in str(body)


def test_one_visitor_costs_one_store_read(client: TestClient, store: CountingStore) -> None:
    sign_in(client, VISITOR, "alice")
    for index in range(30):
        client.post(
            "/activation/token",
            json={"flow": "f1"},
            headers={"x-visitor": f"v{index}", "x-user": "u"},
        )
    handle = next(
        v["handle"]
        for v in client.get("/admin/inspect/visitors").json()["visitors"]
        if v["state"] == "authenticated"
    )
    store.reads = store.scans = 0
    detail = client.get(f"/admin/inspect/visitor/{handle}").json()
    assert detail["state"] == "authenticated"
    assert (store.reads, store.scans) == (1, 0)


def test_lookup_finds_a_visitor_by_user_id_in_one_read(
    client: TestClient, store: CountingStore
) -> None:
    sign_in(client, VISITOR, "alice")
    store.reads = store.scans = 0
    found = client.post("/admin/inspect/lookup", json={"query": " alice "})
    assert found.status_code == 200
    assert found.json()["state"] == "authenticated"
    assert (store.reads, store.scans) == (1, 0)
    assert VISITOR not in found.text
    assert client.post("/admin/inspect/lookup", json={"query": "mallory"}).status_code == 404
    # A reference a support person copied from the screen works too.
    assert (
        client.post("/admin/inspect/lookup", json={"query": found.json()["ref"]}).json()["ref"]
        == found.json()["ref"]
    )
    for bad in ("", "x" * 257, "a\x00b", 42):
        assert client.post("/admin/inspect/lookup", json={"query": bad}).status_code == 400
    assert client.post("/admin/inspect/lookup", content=b"query=alice").status_code == 415


def test_references_are_keyed_and_handles_sealed() -> None:
    one, same, other = (
        References(SECRET),
        References(SECRET),
        References(b"another secret, 32 bytes long.."),
    )
    assert one.ref(VISITOR) == same.ref(VISITOR)  # two workers, one secret
    assert one.ref(VISITOR) != other.ref(VISITOR)
    assert re.fullmatch(r"[0-9a-f]{16}", one.ref(VISITOR))
    handle = one.handle(VISITOR)
    assert same.open(handle) == VISITOR
    assert other.open(handle) is None
    assert VISITOR not in handle
    assert one.handle(VISITOR) != handle  # a fresh nonce each time
    tampered = handle[:-2] + ("AA" if not handle.endswith("AA") else "BB")
    assert one.open(tampered) is None
    for junk in ("", "nothex", "A" * 60, "!" * 60, None, 7):
        assert one.open(junk) is None
    with pytest.raises(ValueError, match="16 bytes"):
        References(b"short")


def test_the_page_is_prefix_independent(client: TestClient) -> None:
    page = client.get("/admin/inspect").text
    assert "/inspect/visitors" not in page  # it builds its URLs from where it is served
    assert "location.pathname" in page


def test_a_selected_visitor_comes_with_the_listing(
    client: TestClient, store: CountingStore
) -> None:
    sign_in(client, VISITOR, "alice")
    handle = client.get("/admin/inspect/visitors").json()["visitors"][0]["handle"]
    body = client.get("/admin/inspect/visitors", params={"selected": handle}).json()
    assert body["selected"]["state"] == "authenticated"
    assert body["selected"]["svg"].startswith("<svg")
    assert (
        client.get("/admin/inspect/visitors", params={"selected": "junk"}).json()["selected"]
        is None
    )


@pytest.mark.parametrize("state", list(State))
def test_colours_per_state(state: State) -> None:
    from statemachine.tools import diagrams

    svg = diagram_svg(diagrams.PROFILES["defensive"], state)
    kind = kind_of(state)
    current = re.search(
        rf'<g class="state current" data-state="{state.value}" data-kind="{kind}">'
        r'<rect [^>]*fill="(#[0-9a-f]{6})"',
        svg,
    )
    assert current is not None
    assert current.group(1) == CURRENT[kind].fill
    expected = {
        State.AUTHENTICATED: "#2e7d32",  # green
        State.BLOCKED: "#c62828",  # red
        State.ANONYMOUS: "#78909c",  # neutral
        State.UNAUTHENTICATED: "#cfd8dc",  # neutral
    }.get(state, "#ffb300")  # in flight: amber
    assert current.group(1) == expected
    others = re.findall(
        r'<g class="state[^"]*" data-state="([a-z_]+)" data-kind="([a-z-]+)">'
        r'<rect [^>]*fill="(#[0-9a-f]{6})"',
        svg,
    )
    for name, other_kind, fill in others:
        if name != state.value:
            assert fill == RESTING[other_kind].fill


def test_every_edge_is_labelled_with_its_triggers() -> None:
    from statemachine.protocol.table import rows_for
    from statemachine.tools import diagrams

    profile = diagrams.PROFILES["anonymous"]
    svg = diagram_svg(profile)
    labels = re.findall(r'<text class="edge-label"[^>]*>([^<]+)</text>', svg)
    edges = {(row.source, row.dest) for row in rows_for(profile)}
    assert len(labels) == len(edges)
    triggers = {t.strip() for label in labels for t in label.split(",")}
    assert triggers == {row.trigger.value for row in rows_for(profile)}


def test_the_listing_body_is_framework_neutral() -> None:
    names = References(SECRET)
    body = listing_body(DefensivePolicy(), names, [])
    assert body["counts"]["visitors"] == 0
    assert set(body["counts"]["states"]) == {state.value for state in State}


def test_the_blocking_face_answers_the_same(issuer: TokenIssuer) -> None:
    tracker = ActivationTracker(DefensivePolicy(), MemoryStore())
    tracker.token_request(VISITOR, "f1", partial(issuer.issue, "alice"))
    tracker.report(VISITOR, "f1", OK)
    core = InspectorHttp(tracker, secret=SECRET, lookup={"alice": VISITOR}.get)

    def get(path: str, body: bytes = b"", method: str = "GET") -> Any:
        headers = Headers([("content-type", "application/json")] if body else [])
        return core.handle(HttpRequest(method, path, headers, body, client="127.0.0.1"))

    listing = get("/inspect/visitors")
    assert listing.status == 200
    found = get("/inspect/lookup", b'{"query": "alice"}', "POST")
    assert found.status == 200
    assert b'"state":"authenticated"' in found.body
    assert VISITOR.encode() not in listing.body + found.body
    assert get("/inspect/lookup", b'{"query": "nobody"}', "POST").status == 404


def test_an_async_lookup_that_fails_finds_nobody(issuer: TokenIssuer) -> None:
    tracker = AsyncActivationTracker(DefensivePolicy(), MemoryStore())

    async def broken(_query: str) -> str | None:
        await asyncio.sleep(0)
        raise RuntimeError("the host's directory is down")

    with TestClient(app(tracker, issuer, broken), client=LOOPBACK) as client:
        answer = client.post("/admin/inspect/lookup", json={"query": "alice"})
        assert answer.status_code == 404
        assert "directory" not in answer.text


def test_an_unexplained_failure_is_unknown_drawn_and_counted(issuer: TokenIssuer) -> None:
    """The tag retried three times and reported a failure without a reason: every one of
    those is UNKNOWN in the trail, the counts, the remediation and the metrics."""
    from statemachine.signals.metrics import ActivationMetrics

    tracker = AsyncActivationTracker(DefensivePolicy(), MemoryStore())
    metrics = ActivationMetrics()
    tracker.add_listener(metrics)
    who = {"x-visitor": VISITOR, "x-user": "alice"}
    with TestClient(
        app(tracker, issuer, {"alice": VISITOR}.get), base_url="http://127.0.0.1", client=LOOPBACK
    ) as client:
        for _ in range(4):  # the first attempt and the tag's 3 retries
            assert (
                client.post("/activation/token", json={"flow": "f1"}, headers=who).status_code
                == 200
            )
        failed = {
            "authentication": {
                "option": {"type": "SECURED_AUTHENTICATION"},
                "status": "authentication-failure",
            }
        }
        client.post("/activation/report", json={"flow": "f1", "activation": failed}, headers=who)
        body = client.get("/admin/inspect/visitors").json()
        assert body["counts"]["reasons"] == {"UNKNOWN": 1}
        detail = client.post("/admin/inspect/lookup", json={"query": "alice"}).json()
    assert detail["state"] == "blocked"
    assert detail["reason"]["name"] == "UNKNOWN"
    assert detail["reason"]["remediation"] == FailureReason.UNKNOWN.remediation
    reasons = [e["reason"]["name"] for e in detail["history"] if e["reason"]]
    assert reasons == ["UNKNOWN"] * 4
    assert "SERVER_ERROR" not in str(detail)
    assert b'reason="UNKNOWN"' in metrics.render()

"""8. Web rules: the token endpoint with the same-origin rule and the HTTP core, against the
same endpoint before them (``bench/web_before.py``), per request, in one run.

Each app is called as a server calls it (an ASGI scope, the body as a message), in-process,
so the measure is the endpoint's own cost, not the network's or the scheduler's. Every
request is a new visitor's first token request from the page (same Origin, JSON). Two
providers: a real RSA mint (what production does) and a constant token (the harsher ratio:
what is left is the HTTP layer and the tracker). Batches alternate between the two apps and
the median CPU time per request of each (the process's own, so that the other work on a
shared machine does not count) is compared.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench.common import us
from policies import DefensivePolicy
from statemachine import AsyncActivationTracker
from statemachine.stores import MemoryStore
from statemachine.tokens import TokenIssuer, generate_rsa
from statemachine.web import activation_routes
from statemachine.web.http import Headers, HttpRequest, check_state_change
from tests.web_apps import http_scope

ORIGIN = b"http://127.0.0.1:8000"


def _app(routes: list[Any]) -> Any:
    from starlette.applications import Starlette

    return Starlette(routes=routes)


def _apps(provider: Any) -> dict[str, Any]:
    from bench.web_before import token_route

    def visitor(request: Any) -> Any:
        return request.headers.get("x-visitor")

    def tracker() -> AsyncActivationTracker:
        return AsyncActivationTracker(DefensivePolicy(), MemoryStore(max_entries=1_000_000))

    return {
        "before": _app([token_route(tracker(), visitor_id=visitor, token_provider=provider)]),
        "after": _app(activation_routes(tracker(), visitor_id=visitor, token_provider=provider)),
    }


async def _request(app: Any, visitor: bytes) -> int:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"),
        (b"accept", b"*/*"),
        (b"content-type", b"application/json"),
        (b"content-length", b"14"),
        (b"origin", ORIGIN),
        (b"sec-fetch-site", b"same-origin"),
        (b"sec-fetch-mode", b"cors"),
        (b"referer", ORIGIN + b"/"),
        (b"cookie", b"sa_visitor=0123456789abcdef0123456789abcdef; sa_user=x.y"),
        (b"x-visitor", visitor),
    ]
    scope = http_scope("POST", "/activation/token", headers)
    messages = [{"type": "http.request", "body": b'{"flow": "f1"}', "more_body": False}]
    status = 0

    async def receive() -> Any:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _batch(app: Any, name: str, start: int, count: int) -> float:
    """CPU seconds per request (the process's, so other work on the machine does not count)."""
    started = time.process_time()
    for n in range(start, start + count):
        status = await _request(app, f"{name}-{n}".encode())
        assert status == 200, status
    return (time.process_time() - started) / count


async def _compare(provider: Any, rounds: int, count: int) -> dict[str, float]:
    apps = _apps(provider)
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for name, app in apps.items():  # warm up both paths
        await _batch(app, name, 10_000_000, 50)
    for n in range(rounds):
        order = list(apps.items()) if n % 2 == 0 else list(reversed(apps.items()))
        for name, app in order:
            samples[name].append(await _batch(app, name, n * count, count))
    before, after = (statistics.median(samples[k]) for k in ("before", "after"))
    return {"before": before, "after": after, "ratio": after / before}


def _check_cost(number: int) -> float:
    request = HttpRequest(
        "POST",
        "/activation/token",
        Headers([("origin", ORIGIN.decode()), ("content-type", "application/json")]),
        b'{"flow": "f1"}',
        "127.0.0.1",
        "http",
        "127.0.0.1:8000",
    )
    started = time.perf_counter()
    for _ in range(number):
        check_state_change(request)
    return (time.perf_counter() - started) / number


def run(quick: bool) -> dict[str, Any]:
    rounds, count = (4, 25) if quick else (200, 25)
    issuer = TokenIssuer(generate_rsa(), generate_rsa(), "https://brand.example")

    async def mint() -> str:
        return issuer.issue("visitor-42")

    async def constant() -> str:
        return "constant-token"

    def minting(_request: Any) -> Any:
        return mint

    def cheap(_request: Any) -> Any:
        return constant

    return {
        "mint": asyncio.run(_compare(minting, rounds, count)),
        "constant": asyncio.run(_compare(cheap, rounds * 2, count)),
        "check": _check_cost(1_000 if quick else 100_000),
        "rounds": rounds,
        "count": count,
    }


def report(r: dict[str, Any]) -> list[str]:
    def row(name: str, m: dict[str, float]) -> str:
        verdict = "met" if m["ratio"] <= 1.05 else "MISSED"
        return (
            f"| {name} | {us(m['before'])} | {us(m['after'])} | **{m['ratio']:.3f}x** ({verdict}) |"
        )

    return [
        "## 8. Web rules: the token endpoint with the same-origin rule, against before",
        "",
        f"In-process ASGI calls (no sockets), {r['rounds']} alternating batches of {r['count']} "
        "requests per app, the median of the process's CPU time per request; every request "
        "a new visitor's first token request from the page "
        "(same `Origin`, `Content-Type: application/json`, the headers a browser sends). "
        "*Before*: the Starlette handler as it was (`bench/web_before.py`, no origin check); "
        "*after*: `activation_routes` on the HTTP core, origin check on. Target: ≤ 1.05x.",
        "",
        "| provider | before, per request | after, per request | after / before |",
        "|---|---|---|---|",
        row("real RSA mint (production)", r["mint"]),
        row("constant token (HTTP layer and tracker only)", r["constant"]),
        "",
        f"The same-origin, content-type and size checks alone: {us(r['check'])} per request.",
        "",
    ]

"""A Starlette host app as the README writes one, and requests as a server hands them to it,
for the in-process web tests and benchmarks.

The tests differ only in where the visitor and the signed-in user come from
(headers, so a test can set them per request; or cookies, as a browser sends
them) and in the options they pass to the two route sets.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from statemachine import AsyncActivationTracker
from statemachine.signals.metrics import ActivationMetrics
from statemachine.tokens import TokenIssuer
from statemachine.web import activation_routes, inspector_routes


def starlette_host(
    tracker: AsyncActivationTracker,
    issuer: TokenIssuer,
    *,
    identity: Literal["headers", "cookies"],
    activation: dict[str, Any] | None = None,
    inspector: dict[str, Any] | None = None,
) -> Starlette:
    """The activation and inspector routes under ``/app``, the metrics listener on.

    With ``identity="headers"`` the visitor is ``x-visitor`` and the user
    ``x-user``; with ``"cookies"`` they are the ``visitor`` and ``user`` cookies.
    """
    visitor_name, user_name = (
        ("x-visitor", "x-user") if identity == "headers" else ("visitor", "user")
    )

    def visitor_id(request: Request) -> str | None:
        source = request.headers if identity == "headers" else request.cookies
        return source.get(visitor_name)

    async def token_provider(request: Request) -> Any:
        source = request.headers if identity == "headers" else request.cookies
        user = source.get(user_name)
        return None if user is None else partial(issuer.issue, user)

    metrics = ActivationMetrics()
    tracker.add_listener(metrics)
    return Starlette(
        routes=[
            Mount(
                "/app",
                routes=[
                    *activation_routes(
                        tracker,
                        visitor_id=visitor_id,
                        token_provider=token_provider,
                        **(activation or {}),
                    ),
                    *inspector_routes(tracker, metrics=metrics, **(inspector or {})),
                ],
            )
        ]
    )


def http_scope(
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    *,
    query: bytes = b"",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    server: tuple[str, int] = ("127.0.0.1", 8000),
) -> dict[str, Any]:
    """An HTTP/1.1 request's ASGI scope, as uvicorn builds it (``headers`` as raw pairs)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "client": client,
        "server": server,
    }

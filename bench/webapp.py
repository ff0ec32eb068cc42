"""The app the web benchmark loads: the token endpoint through the tracker on Redis, and a bare
endpoint that only mints, side by side in the same workers (and a no-op, for the transport)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from policies import DefensivePolicy
from statemachine import AsyncActivationTracker
from statemachine.stores import RedisStore
from statemachine.tokens import TokenIssuer
from statemachine.web import activation_routes
from statemachine.web.http import NO_STORE, Refused, json_object
from statemachine.web.routes import request_facts


def create_app() -> Starlette:
    keys = Path(os.environ["BENCH_KEYS"])
    issuer = TokenIssuer(keys / "brand_private.pem", keys / "platform_public.pem", "bench")
    tracker = AsyncActivationTracker(
        DefensivePolicy(), RedisStore.from_url(os.environ["BENCH_REDIS"], prefix="bench:web:")
    )

    async def mint() -> str:
        return issuer.issue("visitor")

    async def bare(request: Request) -> Response:
        """The same body parsing and response, minus the tracker: mint and answer."""
        try:
            body = json_object(await request_facts(request))
        except Refused as refused:
            return JSONResponse({"error": refused.message}, status_code=refused.status)
        if not isinstance(body.get("flow"), str):
            return JSONResponse({"error": "flow"}, status_code=400)
        option = {"type": "SECURED_AUTHENTICATION", "token": await mint()}
        return JSONResponse({"authenticationOption": option}, headers=dict(NO_STORE))

    async def noop(_request: Request) -> Response:
        return PlainTextResponse("ok")

    def visitor(request: Request) -> Any:
        return request.headers.get("x-visitor")

    def provider(_request: Request) -> Any:
        return mint

    return Starlette(
        routes=[
            Route("/bare", bare, methods=["POST"]),
            Route("/noop", noop, methods=["GET"]),
            *activation_routes(tracker, visitor_id=visitor, token_provider=provider),
        ]
    )

"""The app the web benchmark loads: ``secured-activation serve``'s own app on Redis (the
reference host, ``statemachine.web.reference.create_app``), with a bare minting endpoint and a
no-op added to the same workers.

The environment is the one ``serve`` prepares (keys, cookie secret, Redis URL), so the tracked
endpoint is exactly what ``serve --redis`` answers: the visitor and the signed-in user read
from their cookies, the metrics listener on, every rule of the HTTP core. The bare endpoint
does what any minting endpoint must and nothing else: read who is signed in (the same signed
cookie), parse the body, mint, answer.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from statemachine.tokens import TokenIssuer
from statemachine.web import reference
from statemachine.web.http import NO_STORE, Refused, json_object
from statemachine.web.routes import request_facts


def create_app() -> Starlette:
    app = reference.create_app()
    keys = Path(os.environ[reference.ENV_KEYS])
    issuer = TokenIssuer(keys / "brand_private.pem", keys / "platform_public.pem", reference.ISSUER)
    cookies = reference.Cookies(bytes.fromhex(os.environ[reference.ENV_SECRET]))

    async def bare(request: Request) -> Response:
        """Who is signed in, the body, the mint, the answer: no tracker."""
        signed = cookies.read(request.cookies.get(reference.USER_COOKIE))
        if signed is None:
            return JSONResponse({"error": "not signed in"}, status_code=401)
        try:
            body = json_object(await request_facts(request))
        except Refused as refused:
            return JSONResponse({"error": refused.message}, status_code=refused.status)
        if not isinstance(body.get("flow"), str):
            return JSONResponse({"error": "flow"}, status_code=400)
        option = {"type": "SECURED_AUTHENTICATION", "token": issuer.issue(signed[0])}
        return JSONResponse({"authenticationOption": option}, headers=dict(NO_STORE))

    async def noop(_request: Request) -> Response:
        return PlainTextResponse("ok")

    app.router.routes[:0] = [
        Route("/bare", bare, methods=["POST"]),
        Route("/noop", noop, methods=["GET"]),
    ]
    return app

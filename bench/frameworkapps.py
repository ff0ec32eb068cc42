"""The apps the framework benchmark loads: on FastAPI, Flask and Django, the token endpoint
through the tracker on Redis (the framework's adapter) and a bare endpoint that only parses,
mints and answers, side by side in the same workers.

Each bare endpoint reads the request as that framework's adapter does and parses the body
with the core's strict JSON reader, so the difference between the two is the tracker, the
store and the core's rules — not the framework.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from policies import DefensivePolicy
from statemachine.stores import RedisStore
from statemachine.tokens import TokenIssuer
from statemachine.web.http import Refused, json_object


def _issuer() -> TokenIssuer:
    keys = Path(os.environ["BENCH_KEYS"])
    return TokenIssuer(keys / "brand_private.pem", keys / "platform_public.pem", "bench")


def _store(framework: str) -> RedisStore:
    return RedisStore.from_url(os.environ["BENCH_REDIS"], prefix=f"bench:{framework}:")


def _bare_answer(issuer: TokenIssuer, body: dict[str, Any]) -> tuple[int, bytes]:
    if not isinstance(body.get("flow"), str):
        return 400, b'{"error": "flow"}'
    option = {"type": "SECURED_AUTHENTICATION", "token": issuer.issue("visitor")}
    return 200, json.dumps({"authenticationOption": option}).encode()


def fastapi_app() -> Any:
    from fastapi import APIRouter, FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

    from statemachine import AsyncActivationTracker
    from statemachine.web import activation_routes
    from statemachine.web.routes import request_facts

    issuer = _issuer()
    tracker = AsyncActivationTracker(DefensivePolicy(), _store("fastapi"))

    async def mint() -> str:
        return issuer.issue("visitor")

    app = FastAPI()

    async def bare(request: Request) -> Response:  # a Starlette endpoint, as the adapter's
        try:
            status, data = _bare_answer(issuer, json_object(await request_facts(request)))
        except Refused as refused:
            status, data = refused.status, b'{"error": "refused"}'
        return Response(data, status_code=status, media_type="application/json")

    def provider(_request: Request) -> Any:
        return mint

    app.add_route("/bare", bare, methods=["POST"])
    routes = activation_routes(
        tracker, visitor_id=lambda r: r.headers.get("x-visitor"), token_provider=provider
    )
    app.include_router(APIRouter(routes=routes))
    return app


def flask_app() -> Any:
    from flask import Flask, Response

    from statemachine import ActivationTracker
    from statemachine.web.flask import activation_blueprint, request_facts

    issuer = _issuer()
    tracker = ActivationTracker(DefensivePolicy(), _store("flask"))
    app = Flask(__name__)

    @app.post("/bare")
    def bare() -> Response:
        try:
            status, data = _bare_answer(issuer, json_object(request_facts("/bare")))
        except Refused as refused:
            status, data = refused.status, b'{"error": "refused"}'
        return Response(data, status=status, content_type="application/json")

    def provider(_request: Any) -> Any:
        return lambda: issuer.issue("visitor")

    blueprint = activation_blueprint(
        tracker, visitor_id=lambda r: r.headers.get("x-visitor"), token_provider=provider
    )
    app.register_blueprint(blueprint, url_prefix="/activation")
    return app


def django_app() -> Any:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.urandom(32).hex(),
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF="bench.frameworkapps",
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        INSTALLED_APPS=[],
    )
    django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def _django_urls() -> list[Any]:
    from django.http import HttpResponse
    from django.urls import include, path

    from statemachine import ActivationTracker
    from statemachine.web.django import activation_urls, request_facts

    issuer = _issuer()
    tracker = ActivationTracker(DefensivePolicy(), _store("django"))

    def bare(request: Any) -> HttpResponse:
        try:
            status, data = _bare_answer(issuer, json_object(request_facts(request, "/bare")))
        except Refused as refused:
            status, data = refused.status, b'{"error": "refused"}'
        return HttpResponse(data, status=status, content_type="application/json")

    bare.csrf_exempt = True  # type: ignore[attr-defined]

    def provider(_request: Any) -> Any:
        return lambda: issuer.issue("visitor")

    activation = activation_urls(
        tracker, visitor_id=lambda r: r.headers.get("x-visitor"), token_provider=provider
    )
    return [path("bare", bare), path("activation/", include(activation))]


def __getattr__(name: str) -> Any:
    """Django reads ``urlpatterns`` from this module (ROOT_URLCONF) only when it serves."""
    if name == "urlpatterns":
        patterns = _django_urls()
        globals()["urlpatterns"] = patterns
        return patterns
    raise AttributeError(name)

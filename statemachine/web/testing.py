"""Testing kit for hosts: a STAND-IN tag and a STAND-IN platform, for dev servers and tests.

Neither is the real thing. The stand-in tag (``/tag.js``) has the iAdvize
tag's ``activate``/``logout`` API, its callback object and its 3 retries, and
activates against the stand-in platform endpoint (``POST /platform/activate``),
which runs ``LocalActivator`` with the keys you give it: the checks the
platform makes, offline. A brand mounts them in its own dev server or test
app, next to the activation routes, and points its page at the stand-in tag
instead of the real one — so the whole flow runs in a browser without the
platform. Nothing mounts them by default; never mount them in production
(the stand-in platform tells anyone whether a token is valid).

One per framework: ``standin_routes`` (Starlette, FastAPI), ``standin_blueprint``
(Flask), ``standin_urls`` (Django). Each takes the ``LocalActivator`` and
serves the same two routes, from the same code: ``platform_answer`` below.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from statemachine.activator import LocalActivator
from statemachine.errors import ActivationError
from statemachine.options import ANONYMOUS, SECURED, AuthenticationOption
from statemachine.results import FAILURE, SUCCESS

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

PLATFORM_PATH: Final = "/platform/activate"
TAG_PATH: Final = "/tag.js"
MAX_BODY: Final = 64 * 1024
JSON_HEADERS: Final = {"Content-Type": "application/json", "Cache-Control": "no-store"}
SCRIPT_HEADERS: Final = {"Content-Type": "text/javascript; charset=utf-8"}


def standin_tag_source(prefix: str = "") -> str:
    """The stand-in tag's script, calling the stand-in platform under ``prefix``."""
    source = resources.files("statemachine.web").joinpath("static/tag.js").read_text("utf-8")
    if prefix:
        source = source.replace(f'"{PLATFORM_PATH}"', json.dumps(prefix + PLATFORM_PATH))
    return "/* STAND-IN: not the iAdvize tag; for dev servers and tests only. */\n" + source


def platform_answer(
    activator: LocalActivator, content_type: str | None, body: bytes
) -> tuple[int, dict[str, Any]]:
    """What the stand-in platform answers to one activation: (status, JSON object).

    Anything the tag would not send gets a 4xx ``{"error"}``; an option the
    platform refuses gets the tag's failure callback object with its reason.
    The token is never sent back.
    """
    from statemachine.tokens.verifier import strict_json

    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        return 415, {"error": "the body must be JSON (Content-Type: application/json)"}
    if len(body) > MAX_BODY:
        return 413, {"error": f"the body is over {MAX_BODY} bytes"}
    try:
        parsed = strict_json(body)
    except ValueError:
        return 400, {"error": "the body is not valid JSON"}
    raw = parsed.get("authenticationOption") if isinstance(parsed, dict) else None
    kind = raw.get("type") if isinstance(raw, dict) else None
    token = raw.get("token") if isinstance(raw, dict) else None
    if kind not in (SECURED, ANONYMOUS) or (kind == SECURED and not isinstance(token, str)):
        return 200, _callback(kind, FAILURE, "A valid authentication option must be provided")
    try:
        activator.activate(AuthenticationOption(kind, token if kind == SECURED else None))
    except ActivationError as refused:
        return 200, _callback(kind, FAILURE, refused.reason.message)
    return 200, _callback(kind, SUCCESS, None)


def _callback(kind: Any, status: str, reason: str | None) -> dict[str, Any]:
    """The tag's callback object; the token is not sent back (the tag has it already)."""
    authentication: dict[str, Any] = {
        "option": {"type": kind if kind in (SECURED, ANONYMOUS) else SECURED},
        "status": status,
    }
    if reason is not None:
        authentication["reason"] = reason
    return {"authentication": authentication}


def standin_routes(activator: LocalActivator, *, prefix: str = "") -> list[BaseRoute]:
    """Starlette/FastAPI: ``GET {prefix}/tag.js`` and ``POST {prefix}/platform/activate``."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    tag = standin_tag_source(prefix)

    async def tag_script(_request: Request) -> Response:
        return Response(tag, headers=SCRIPT_HEADERS)

    async def platform(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            body = b" " * (MAX_BODY + 1)  # refused without reading it
        else:
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    break
        status, answer = platform_answer(activator, request.headers.get("content-type"), body)
        return JSONResponse(answer, status_code=status, headers={"Cache-Control": "no-store"})

    return [
        Route(prefix + TAG_PATH, tag_script, methods=["GET"]),
        Route(prefix + PLATFORM_PATH, platform, methods=["POST"]),
    ]


def standin_blueprint(activator: LocalActivator, *, name: str = "standin") -> Any:
    """Flask: a blueprint with ``GET /tag.js`` and ``POST /platform/activate``
    (register it with ``url_prefix`` to move both)."""
    from flask import Blueprint, Response, request

    blueprint = Blueprint(name, __name__)

    @blueprint.get(TAG_PATH)
    def tag_script() -> Response:
        prefix = _mount_prefix(request.path, TAG_PATH)
        return Response(standin_tag_source(prefix), headers=SCRIPT_HEADERS)

    @blueprint.post(PLATFORM_PATH)
    def platform() -> Response:
        length = request.content_length
        body = b" " * (MAX_BODY + 1) if length and length > MAX_BODY else request.get_data()
        status, answer = platform_answer(activator, request.content_type, body)
        return Response(json.dumps(answer), status=status, headers=JSON_HEADERS)

    return blueprint


def _mount_prefix(path: str, suffix: str) -> str:
    """The mount prefix of a route, from the path it answered and its own suffix."""
    return path[: -len(suffix)] if path.endswith(suffix) else ""


def standin_urls(activator: LocalActivator) -> list[Any]:
    """Django: URL patterns ``tag.js`` and ``platform/activate`` for ``include()``."""
    from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
    from django.urls import path

    def tag_script(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET"])
        prefix = _mount_prefix(request.path, TAG_PATH)
        return HttpResponse(standin_tag_source(prefix), headers=SCRIPT_HEADERS)

    def platform(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        length = request.META.get("CONTENT_LENGTH", "")
        too_big = isinstance(length, str) and length.isdigit() and int(length) > MAX_BODY
        body = b" " * (MAX_BODY + 1) if too_big else request.body
        status, answer = platform_answer(activator, request.content_type, body)
        return JsonResponse(answer, status=status, headers={"Cache-Control": "no-store"})

    # the stand-in platform is another origin's endpoint in real life: no CSRF token
    platform.csrf_exempt = True  # type: ignore[attr-defined]
    return [
        path(TAG_PATH.lstrip("/"), tag_script),
        path(PLATFORM_PATH.lstrip("/"), platform),
    ]

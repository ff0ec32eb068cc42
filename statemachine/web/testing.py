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

``StandinHttp`` holds both routes on the HTTP core's terms (request facts in,
response out); one adapter per framework mounts it: ``standin_routes``
(Starlette, FastAPI), ``standin_blueprint`` (Flask), ``standin_urls`` (Django).
``prefix`` moves both routes (``"/dev"``: ``/dev/tag.js`` and
``/dev/platform/activate``); the served tag then calls the moved platform.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from statemachine.hostcalls.activator import LocalActivator
from statemachine.protocol.errors import ActivationError
from statemachine.protocol.options import ANONYMOUS, SECURED, AuthenticationOption
from statemachine.protocol.results import FAILURE, SUCCESS
from statemachine.web.http import (
    HttpRequest,
    HttpResponse,
    Refused,
    Route,
    check_json_type,
    error_response,
    json_object,
    json_response,
    last_resort,
    refuse_unrouted,
)

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

__all__ = ["StandinHttp", "standin_blueprint", "standin_routes", "standin_urls"]

PLATFORM_PATH: Final = "/platform/activate"
TAG_PATH: Final = "/tag.js"
STANDIN_BANNER: Final = "/* STAND-IN: not the iAdvize tag; for dev servers and tests only. */\n"


def standin_tag_source(prefix: str = "") -> str:
    """The stand-in tag's script, calling the stand-in platform under ``prefix``."""
    source = resources.files("statemachine.web").joinpath("static/tag.js").read_text("utf-8")
    if prefix:
        source = source.replace(f'"{PLATFORM_PATH}"', json.dumps(prefix + PLATFORM_PATH))
    return STANDIN_BANNER + source


class StandinHttp:
    """The stand-in tag and platform as core routes: ``routes`` and ``handle(request)``.

    ``handle`` makes no I/O (the activator verifies a token in memory), so the
    same method serves blocking and async adapters; ``ahandle`` is its async face.
    """

    def __init__(self, activator: LocalActivator, *, prefix: str = "") -> None:
        self.activator = activator
        self.prefix = prefix.rstrip("/")
        self.routes = (
            Route(self.prefix + TAG_PATH, ("GET", "HEAD")),
            Route(self.prefix + PLATFORM_PATH, ("POST",)),
        )
        self._tag = HttpResponse(
            200,
            (
                ("Content-Type", "text/javascript; charset=utf-8"),
                ("X-Content-Type-Options", "nosniff"),
            ),
            standin_tag_source(self.prefix).encode("utf-8"),
        )
        self._methods = {route.path: route.methods for route in self.routes}

    def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            refuse_unrouted(self._methods, request)
            if request.path.endswith(TAG_PATH):
                return self._tag
            return self.platform(request)
        except Refused as refused:
            return error_response(refused.status, refused.message, refused.headers)
        except Exception as error:  # noqa: BLE001 - never a 500
            return last_resort(error, request.path)

    async def ahandle(self, request: HttpRequest) -> HttpResponse:
        return self.handle(request)

    def platform(self, request: HttpRequest) -> HttpResponse:
        """What the platform does with an activation, offline: the tag's callback object.

        The real platform is another origin, so no same-origin rule here; the
        body must still be a JSON object. The token is never sent back.
        """
        check_json_type(request)
        body = json_object(request)
        raw = body.get("authenticationOption")
        kind = raw.get("type") if isinstance(raw, dict) else None
        token = raw.get("token") if isinstance(raw, dict) else None
        if kind not in (SECURED, ANONYMOUS) or (kind == SECURED and not isinstance(token, str)):
            return json_response(
                200, _callback(kind, FAILURE, "A valid authentication option must be provided")
            )
        try:
            self.activator.activate(AuthenticationOption(kind, token if kind == SECURED else None))
        except ActivationError as refused:
            return json_response(200, _callback(kind, FAILURE, refused.reason.message))
        return json_response(200, _callback(kind, SUCCESS, None))


def _callback(kind: Any, status: str, reason: str | None) -> dict[str, Any]:
    """The tag's callback object; the token is not sent back (the tag has it already)."""
    option = kind if kind in (SECURED, ANONYMOUS) else SECURED
    authentication: dict[str, Any] = {"option": {"type": option}, "status": status}
    if reason is not None:
        authentication["reason"] = reason
    return {"authentication": authentication}


def standin_routes(activator: LocalActivator, *, prefix: str = "") -> list[BaseRoute]:
    """Starlette/FastAPI: ``GET {prefix}/tag.js`` and ``POST {prefix}/platform/activate``."""
    from statemachine.web.routes import adapt

    core = StandinHttp(activator, prefix=prefix)
    return adapt((route.path for route in core.routes), core.ahandle)


def standin_blueprint(activator: LocalActivator, *, prefix: str = "") -> Any:
    """Flask: a blueprint with ``GET {prefix}/tag.js`` and ``POST {prefix}/platform/activate``
    (register it without a ``url_prefix``)."""
    from statemachine.web.flask import adapt

    core = StandinHttp(activator, prefix=prefix)
    return adapt("secured_activation_standin", (route.path for route in core.routes), core.handle)


def standin_urls(activator: LocalActivator, *, prefix: str = "") -> list[Any]:
    """Django: URL patterns ``{prefix}/tag.js`` and ``{prefix}/platform/activate``, for
    ``path("", include(standin_urls(activator)))``."""
    from statemachine.web.django import adapt

    core = StandinHttp(activator, prefix=prefix)
    return adapt((route.path for route in core.routes), core.handle)

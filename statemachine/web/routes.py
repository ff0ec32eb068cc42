"""Routes a host mounts: the tag-driven tracker over HTTP.

The host supplies two callables: who the visitor is (usually a cookie) and
the signed-in user's token provider (``None`` when nobody is signed in: the
backend cannot mint, and the policy answers). Everything else — bodies,
flow ids, reports, store failures — is checked here, and every refusal is a
4xx (or 503) JSON ``{"error": ...}`` that changed nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from statemachine.sessions import TokenProvider
from statemachine.stores.base import StoreError
from statemachine.trackers import AsyncActivationTracker
from statemachine.tracking import TrackerInputError

MAX_BODY: Final = 64 * 1024
"""Bytes a request body may have: a flow id and the tag's callback object are far smaller."""

NO_STORE: Final = {"Cache-Control": "no-store"}

VisitorOf = Callable[[Request], "str | Awaitable[str | None] | None"]
ProviderOf = Callable[[Request], "TokenProvider | Awaitable[TokenProvider | None] | None"]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read with a size cap and strict parsing."""
    from statemachine.tokens.verifier import strict_json

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadRequest(415, "the body must be JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BadRequest(413, f"the body is over {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(413, f"the body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        body = strict_json(b"".join(chunks))
    except ValueError:
        raise BadRequest(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise BadRequest(400, f"'{field}' must be a string")
    return value


async def _call(fn: Callable[[Request], Any], request: Request) -> Any:
    value = fn(request)
    if inspect.isawaitable(value):
        value = await value
    return value


def _no_token() -> None:
    """The provider when nobody is signed in: the backend cannot mint."""
    return


def snippet_source() -> str:
    return resources.files("statemachine.web").joinpath("static/snippet.js").read_text("utf-8")


def activation_routes(
    tracker: AsyncActivationTracker,
    *,
    visitor_id: VisitorOf,
    token_provider: ProviderOf,
    prefix: str = "/activation",
) -> list[BaseRoute]:
    """``POST {prefix}/token``, ``/report``, ``/logout``; ``GET {prefix}/state``, ``/snippet.js``.

    ``visitor_id(request)`` and ``token_provider(request)`` may be sync or
    async. A request without a visitor is refused (401) before anything else.
    """

    async def visitor(request: Request) -> str:
        found = await _call(visitor_id, request)
        if not found:
            raise BadRequest(401, "no visitor: the visitor cookie is missing")
        return str(found)

    async def handle(request: Request, work: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            return await work(request)
        except BadRequest as refused:
            return error(refused.status, refused.message)
        except TrackerInputError as refused:
            return error(400, str(refused))
        except StoreError:
            return error(503, "the activation store is unavailable; try again")

    async def token(request: Request) -> Response:
        async def work(request: Request) -> Response:
            who = await visitor(request)
            body = await json_body(request)
            provider = await _call(token_provider, request)
            reply = await tracker.token_request(who, _text(body, "flow"), provider)
            headers = {**NO_STORE, **reply.headers}
            return JSONResponse(reply.to_dict(), status_code=reply.status_code, headers=headers)

        return await handle(request, work)

    async def report(request: Request) -> Response:
        async def work(request: Request) -> Response:
            who = await visitor(request)
            body = await json_body(request)
            reply = await tracker.report(who, _text(body, "flow"), body.get("activation"))
            return JSONResponse(reply.to_dict(), headers=NO_STORE)

        return await handle(request, work)

    async def logout(request: Request) -> Response:
        async def work(request: Request) -> Response:
            await tracker.logout(await visitor(request))
            return JSONResponse({"state": "unauthenticated"}, headers=NO_STORE)

        return await handle(request, work)

    async def state(request: Request) -> Response:
        async def work(request: Request) -> Response:
            view = await tracker.view(await visitor(request))
            if view is None:
                body: dict[str, Any] = {
                    "state": "unauthenticated",
                    "attempts": 0,
                    "reason": None,
                    "history": [],
                    "authenticated_until": None,
                }
            else:
                body = view.to_dict()
            return JSONResponse(body, headers=NO_STORE)

        return await handle(request, work)

    source = snippet_source()

    async def snippet(_request: Request) -> Response:
        return Response(source, media_type="text/javascript")

    return [
        Route(f"{prefix}/token", token, methods=["POST"]),
        Route(f"{prefix}/report", report, methods=["POST"]),
        Route(f"{prefix}/logout", logout, methods=["POST"]),
        Route(f"{prefix}/state", state, methods=["GET"]),
        Route(f"{prefix}/snippet.js", snippet, methods=["GET"]),
    ]

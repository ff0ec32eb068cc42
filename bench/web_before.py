"""The token endpoint as it was before the HTTP core (frozen here as the origin bench's floor).

A copy of the Starlette handler the routes had until the same-origin rule and the
framework-neutral core: content type and size checks, strict JSON, the tracker, the answer.
No origin check, no core. Only ``bench/origin.py`` uses it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from statemachine.stores.base import StoreError
from statemachine.tokens.verifier import strict_json
from statemachine.tracking._faces import AsyncActivationTracker
from statemachine.tracking._rules import TrackerInputError

MAX_BODY = 64 * 1024
NO_STORE = {"Cache-Control": "no-store"}


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


async def json_body(request: Request) -> dict[str, Any]:
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


async def _call(fn: Callable[[Request], Any], request: Request) -> Any:
    value = fn(request)
    if inspect.isawaitable(value):
        value = await value
    return value


def _no_token() -> None:
    return


def token_route(
    tracker: AsyncActivationTracker,
    *,
    visitor_id: Callable[[Request], Any],
    token_provider: Callable[[Request], Any],
    prefix: str = "/activation",
) -> BaseRoute:
    async def token(request: Request) -> Response:
        try:
            found = await _call(visitor_id, request)
            if not found:
                raise BadRequest(401, "no visitor: the visitor cookie is missing")
            body = await json_body(request)
            flow = body.get("flow")
            if not isinstance(flow, str):
                raise BadRequest(400, "'flow' must be a string")
            provider = await _call(token_provider, request) or _no_token
            reply = await tracker.token_request(str(found), flow, provider)
            return JSONResponse(reply.to_dict(), status_code=reply.status_code, headers=NO_STORE)
        except BadRequest as refused:
            return error(refused.status, refused.message)
        except TrackerInputError as refused:
            return error(400, str(refused))
        except StoreError:
            return error(503, "the activation store is unavailable; try again")

    return Route(f"{prefix}/token", token, methods=["POST"])

"""The live inspector and ``/metrics``: what the store holds, drawn from the table.

Visitors are shown by a short reference (a hash of their id), never by their
id, user id or token. The page polls two JSON routes, so it updates by itself
and works across workers: every worker reads the same store.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from statemachine.metrics import CONTENT_TYPE, ActivationMetrics
from statemachine.policy import Profile
from statemachine.stores.base import DamagedRecord, StoreError
from statemachine.trackers import AsyncActivationTracker
from statemachine.web.routes import NO_STORE, error
from statemachine.web.svg import diagram_svg

MAX_LISTED: Final = 200
_REF: Final = re.compile(r"[0-9a-f]{12}")


def visitor_ref(visitor_id: str) -> str:
    """A stable, short, non-reversible name for a visitor, for screens."""
    return hashlib.sha256(visitor_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def inspector_routes(
    tracker: AsyncActivationTracker,
    *,
    metrics: ActivationMetrics | None = None,
    prefix: str = "/inspect",
) -> list[BaseRoute]:
    """``GET {prefix}`` (the page), ``{prefix}/visitors``, ``{prefix}/visitor/{ref}``,
    and ``/metrics`` when ``metrics`` is given."""
    profile = Profile.of(tracker.policy)
    page = resources.files("statemachine.web").joinpath("static/inspector.html").read_text("utf-8")
    store: Any = tracker.store

    damaged: list[str] = []  # keys of the last listing whose record nobody can read

    async def visitors() -> list[tuple[str, Any]]:
        keys = await store.akeys(MAX_LISTED)
        found = []
        damaged.clear()
        for key in keys:
            try:
                view = await tracker.view(key)
            except DamagedRecord:  # shown as damaged (a logout repairs it), not a failed page
                damaged.append(key)
                continue
            if view is not None:
                found.append((key, view))
        found.sort(key=lambda item: item[1].since, reverse=True)
        return found

    async def index(_request: Request) -> Response:
        return HTMLResponse(page, headers=NO_STORE)

    async def listing(_request: Request) -> Response:
        try:
            found = await visitors()
        except StoreError:
            return error(503, "the activation store is unavailable")
        return JSONResponse(
            {
                "policy": str(tracker.policy.name),
                "visitors": [
                    {
                        "ref": visitor_ref(key),
                        "state": view.state.value,
                        "since": view.since,
                        "attempts": view.attempts,
                        "reason": None if view.reason is None else view.reason.name,
                        "authenticated_until": view.authenticated_until,
                    }
                    for key, view in found
                ]
                + [{"ref": visitor_ref(key), "state": "damaged"} for key in damaged],
                "skipped_shards": len(getattr(store, "skipped_shards", ()) or ()),
            },
            headers=NO_STORE,
        )

    async def one(request: Request) -> Response:
        ref = str(request.path_params["ref"])
        if not _REF.fullmatch(ref):
            return error(400, "a visitor reference is 12 hexadecimal digits")
        try:
            found = await visitors()
        except StoreError:
            return error(503, "the activation store is unavailable")
        for key, view in found:
            if visitor_ref(key) == ref:
                history = [entry.to_dict() for entry in view.history]
                visited = {e.source for e in view.history} | {e.dest for e in view.history}
                taken = {(e.source, e.dest) for e in view.history}
                return JSONResponse(
                    {
                        "ref": ref,
                        "state": view.state.value,
                        "attempts": view.attempts,
                        "reason": None if view.reason is None else view.reason.name,
                        "history": history,
                        "svg": diagram_svg(profile, view.state, visited, taken),
                    },
                    headers=NO_STORE,
                )
        return error(404, "no such visitor in the store")

    routes: list[BaseRoute] = [
        Route(prefix, index, methods=["GET"]),
        Route(f"{prefix}/visitors", listing, methods=["GET"]),
        Route(f"{prefix}/visitor/{{ref}}", one, methods=["GET"]),
    ]
    if metrics is not None:

        async def scrape(_request: Request) -> Response:
            return Response(metrics.render(), media_type=CONTENT_TYPE)

        routes.append(Route("/metrics", scrape, methods=["GET"]))
    return routes

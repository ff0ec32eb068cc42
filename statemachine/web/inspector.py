"""The live inspector and ``/metrics``: what the store holds, drawn from the table.

Built for a brand's support team: counts per state and per reason at the top,
a lookup box (the host's ``lookup(query) -> visitor_id | None``, e.g. a user id
to the visitor it signed in as), one visitor's path through the machine in the
colour of its outcome, and what to check for its failure reason.

Visitors are never shown by their id (it is their cookie), user id or token:
- a *reference* names a visitor on screen: an HMAC of its id under a key derived
  from the host's secret, so that nobody holding a cookie can compute another
  visitor's reference, nor find a cookie from a reference;
- a *handle* opens one visitor: its id sealed (AES-GCM) under another key derived
  from the secret. Opening it is one store read, never a scan. Workers that share
  the secret share references and handles.

The page polls one URL once a second (the listing with the selected visitor), so
it updates by itself and works across workers: every worker reads the same store.
The page finds its own URLs from where it is served, so any prefix works.

The data (``Inspector``) does not depend on the web framework; the Starlette
routes below are a thin layer over it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from statemachine.metrics import CONTENT_TYPE, ActivationMetrics
from statemachine.policy import Profile
from statemachine.reasons import FailureReason
from statemachine.replies import TrackerView
from statemachine.states import IN_FLIGHT, State
from statemachine.stores.base import StoreError
from statemachine.trackers import AsyncActivationTracker
from statemachine.web.routes import NO_STORE, BadRequest, error, json_body
from statemachine.web.svg import diagram_svg, kind_of

MAX_LISTED: Final = 200
"""Visitors one listing reads at most; the counts say when there were more."""

MAX_QUERY: Final = 256
MAX_HANDLE: Final = 512
REF_LENGTH: Final = 16
_REF: Final = re.compile(rf"[0-9a-f]{{{REF_LENGTH}}}")
_HANDLE: Final = re.compile(r"[A-Za-z0-9_-]{40,512}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Lookup = Callable[[str], "str | Awaitable[str | None] | None"]
"""The host's search: a support person's query (a user id, an order…) to a visitor id."""


class Inspector:
    """What the inspector shows, from the tracker's store: framework-neutral."""

    def __init__(
        self,
        tracker: AsyncActivationTracker,
        *,
        secret: bytes | str | None = None,
        lookup: Lookup | None = None,
    ) -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None and len(secret) < 16:
            raise ValueError("the inspector's secret must be at least 16 bytes")
        # Without a secret, references hold for this process only: pass one to share them.
        root = secret if secret is not None else secrets.token_bytes(32)
        self._ref_key = hmac.new(root, b"secured-activation inspector reference", "sha256").digest()
        seal_key = hmac.new(root, b"secured-activation inspector handle", "sha256").digest()
        self._seal = AESGCM(seal_key)
        self.tracker = tracker
        self.profile = Profile.of(tracker.policy)
        self.lookup = lookup

    def __repr__(self) -> str:
        return f"Inspector(tracker={self.tracker!r}, lookup={self.lookup is not None})"

    # -- names ---------------------------------------------------------------
    def ref(self, visitor_id: str) -> str:
        """A visitor's name on screen: a keyed hash, stable for one secret."""
        raw = visitor_id.encode("utf-8", "surrogatepass")
        return hmac.new(self._ref_key, raw, hashlib.sha256).hexdigest()[:REF_LENGTH]

    def handle(self, visitor_id: str) -> str:
        """An opaque token that opens this visitor in one read (sealed, never readable)."""
        nonce = secrets.token_bytes(12)
        sealed = self._seal.encrypt(nonce, visitor_id.encode("utf-8", "surrogatepass"), b"v1")
        return base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")

    def open(self, handle: str) -> str | None:
        """The visitor id a handle was made for, or None for anything else."""
        if not isinstance(handle, str) or not _HANDLE.fullmatch(handle):
            return None
        try:
            raw = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4))
            plain = self._seal.decrypt(raw[:12], raw[12:], b"v1")
        except (InvalidTag, ValueError, binascii.Error):
            return None
        return plain.decode("utf-8", "surrogatepass")

    # -- data ----------------------------------------------------------------
    def row(self, visitor_id: str, view: TrackerView) -> dict[str, Any]:
        return {
            "ref": self.ref(visitor_id),
            "handle": self.handle(visitor_id),
            "state": view.state.value,
            "kind": kind_of(view.state),
            "since": view.since,
            "attempts": view.attempts,
            "reason": _reason(view.reason),
            "authenticated_until": view.authenticated_until,
        }

    def detail(self, visitor_id: str, view: TrackerView) -> dict[str, Any]:
        """One visitor: its row, its trail (ended flows too) and its diagram."""
        history = view.history
        visited = {e.source for e in history} | {e.dest for e in history}
        taken = {(e.source, e.dest) for e in history}
        return {
            **self.row(visitor_id, view),
            "history": [{**entry.to_dict(), "reason": _reason(entry.reason)} for entry in history],
            # A flow starts where the trail leaves a settled state for one in flight.
            "flows": sum(1 for e in history if e.source not in IN_FLIGHT and e.dest in IN_FLIGHT),
            "svg": diagram_svg(self.profile, view.state, visited, taken),
        }

    async def listing(self) -> dict[str, Any]:
        """Up to ``MAX_LISTED`` visitors, newest first, and the counts per state and reason."""
        store: Any = self.tracker.store
        keys = await store.akeys(MAX_LISTED + 1)
        more = len(keys) > MAX_LISTED
        found: list[tuple[str, TrackerView]] = []
        damaged = 0
        for key in keys[:MAX_LISTED]:
            try:
                view = await self.tracker.view(key)
            except StoreError:
                damaged += 1  # one bad record does not hide the others
                continue
            except ValueError:
                continue  # a key no visitor could have
            if view is not None:
                found.append((key, view))
        found.sort(key=lambda item: item[1].since, reverse=True)
        states = Counter(view.state.value for _, view in found)
        reasons = Counter(view.reason.name for _, view in found if view.reason is not None)
        return {
            "policy": str(self.tracker.policy.name),
            "counts": {
                "visitors": len(found),
                "more": more,
                "damaged": damaged,
                "states": {state.value: states.get(state.value, 0) for state in State},
                "kinds": dict(Counter(kind_of(view.state) for _, view in found)),
                "reasons": dict(sorted(reasons.items())),
            },
            "visitors": [self.row(key, view) for key, view in found],
        }

    async def visitor(self, handle: str) -> dict[str, Any] | None:
        """One visitor by its handle: one store read."""
        visitor_id = self.open(handle)
        if visitor_id is None:
            return None
        return await self._one(visitor_id)

    async def find(self, query: str) -> dict[str, Any] | None:
        """A support person's query: the host's lookup, else a reference among those listed."""
        query = query.strip()
        if self.lookup is not None:
            found = self.lookup(query)
            if inspect.isawaitable(found):
                found = await found
            if isinstance(found, str) and found:
                return await self._one(found)
        if _REF.fullmatch(query.lower()):
            store: Any = self.tracker.store
            for key in await store.akeys(MAX_LISTED):
                if self.ref(key) == query.lower():
                    return await self._one(key)
        return None

    async def _one(self, visitor_id: str) -> dict[str, Any] | None:
        try:
            view = await self.tracker.view(visitor_id)
        except ValueError:
            return None
        return None if view is None else self.detail(visitor_id, view)


def _reason(reason: FailureReason | None) -> dict[str, str] | None:
    if reason is None:
        return None
    return {"name": reason.name, "message": reason.message, "remediation": reason.remediation}


def check_query(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value.strip()) <= MAX_QUERY:
        raise BadRequest(400, f"the query must be 1 to {MAX_QUERY} characters")
    if _CONTROL.search(value):
        raise BadRequest(400, "the query must not contain control characters")
    return value


def inspector_routes(
    tracker: AsyncActivationTracker,
    *,
    metrics: ActivationMetrics | None = None,
    prefix: str = "/inspect",
    secret: bytes | str | None = None,
    lookup: Lookup | None = None,
) -> list[BaseRoute]:
    """``GET {prefix}`` (the page), ``{prefix}/visitors[?selected=handle]``,
    ``{prefix}/visitor/{handle}``, ``POST {prefix}/lookup {"query"}``, and
    ``/metrics`` when ``metrics`` is given.

    ``secret`` keys the references and handles (share it between workers);
    ``lookup(query)`` (sync or async) maps what a support person types to a
    visitor id, or ``None``.
    """
    view = Inspector(tracker, secret=secret, lookup=lookup)
    page = resources.files("statemachine.web").joinpath("static/inspector.html").read_text("utf-8")

    async def index(_request: Request) -> Response:
        return HTMLResponse(page, headers=NO_STORE)

    async def listing(request: Request) -> Response:
        try:
            body = await view.listing()
            selected = request.query_params.get("selected")
            if selected:
                body["selected"] = await view.visitor(selected)
        except StoreError:
            return error(503, "the activation store is unavailable")
        return JSONResponse(body, headers=NO_STORE)

    async def one(request: Request) -> Response:
        try:
            found = await view.visitor(str(request.path_params["handle"]))
        except StoreError:
            return error(503, "the activation store is unavailable")
        if found is None:
            return error(404, "no such visitor in the store")
        return JSONResponse(found, headers=NO_STORE)

    async def find(request: Request) -> Response:
        try:
            body = await json_body(request)
            found = await view.find(check_query(body.get("query")))
        except BadRequest as refused:
            return error(refused.status, refused.message)
        except StoreError:
            return error(503, "the activation store is unavailable")
        if found is None:
            return error(404, "no visitor found for that query")
        return JSONResponse(found, headers=NO_STORE)

    routes: list[BaseRoute] = [
        Route(prefix, index, methods=["GET"]),
        Route(f"{prefix}/visitors", listing, methods=["GET"]),
        Route(f"{prefix}/visitor/{{handle}}", one, methods=["GET"]),
        Route(f"{prefix}/lookup", find, methods=["POST"]),
    ]
    if metrics is not None:

        async def scrape(_request: Request) -> Response:
            return Response(metrics.render(), media_type=CONTENT_TYPE)

        routes.append(Route("/metrics", scrape, methods=["GET"]))
    return routes

"""The web host: the HTTP contract once (``statemachine.web.http``) and its adapters.

``activation_routes`` are the routes a host mounts in its own ASGI app
(Starlette, FastAPI; extra ``[web]``): the token endpoint, the report, logout,
state, and the page snippet that wraps the tag. ``inspector_routes`` add the
live inspector and ``/metrics`` (loopback only unless the host passes a
``guard``). ``statemachine.web.reference`` is the reference host that
``secured-activation serve`` runs. The Starlette names are imported on first
use, so a host on another framework never needs Starlette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statemachine.web.http import MAX_BODY

if TYPE_CHECKING:
    from statemachine.web.routes import activation_routes, inspector_routes

__all__ = ["MAX_BODY", "activation_routes", "inspector_routes"]


def __getattr__(name: str) -> Any:
    if name in ("activation_routes", "inspector_routes"):
        from statemachine.web import routes

        return getattr(routes, name)
    raise AttributeError(f"module 'statemachine.web' has no attribute {name!r}")

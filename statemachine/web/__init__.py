"""The web host (extra ``[web]``: Starlette and uvicorn).

``activation_routes`` are the routes a host mounts in its own ASGI app
(Starlette, FastAPI): the token endpoint, the report, logout, state, and the
page snippet that wraps the tag. ``inspector_routes`` add the live inspector
and ``/metrics``. ``statemachine.web.reference`` is the reference host that
``secured-activation serve`` runs.
"""

from __future__ import annotations

from statemachine.web.inspector import inspector_routes
from statemachine.web.routes import MAX_BODY, activation_routes

__all__ = ["MAX_BODY", "activation_routes", "inspector_routes"]

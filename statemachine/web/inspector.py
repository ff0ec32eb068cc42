"""The live inspector's content: what the store holds, drawn from the table.

Visitors are shown by a short reference (a hash of their id), never by their
id, user id or token. The page polls two JSON routes, so it updates by itself
and works across workers: every worker reads the same store.

This module only makes the page and the JSON bodies; which requests get them
(the routes, the guard, loopback-only by default) is decided by the HTTP core
(``statemachine.web.http``), on every framework.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final

from statemachine.policy import ActivationPolicy, Profile
from statemachine.web.svg import diagram_svg

MAX_LISTED: Final = 200
REF: Final = re.compile(r"[0-9a-f]{12}")


def visitor_ref(visitor_id: str) -> str:
    """A stable, short, non-reversible name for a visitor, for screens."""
    return hashlib.sha256(visitor_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def page_html() -> str:
    return resources.files("statemachine.web").joinpath("static/inspector.html").read_text("utf-8")


def listing_body(policy: ActivationPolicy, found: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """``{prefix}/visitors``: every listed visitor (newest first), by reference."""
    return {
        "policy": str(policy.name),
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
        ],
    }


def visitor_body(profile: Profile, ref: str, view: Any) -> dict[str, Any]:
    """``{prefix}/visitor/{ref}``: one visitor's path, and the diagram with it drawn."""
    history = [entry.to_dict() for entry in view.history]
    visited = {e.source for e in view.history} | {e.dest for e in view.history}
    taken = {(e.source, e.dest) for e in view.history}
    return {
        "ref": ref,
        "state": view.state.value,
        "attempts": view.attempts,
        "reason": None if view.reason is None else view.reason.name,
        "history": history,
        "svg": diagram_svg(profile, view.state, visited, taken),
    }

"""The live inspector's content: what the store holds, drawn from the table.

Built for a brand's support team: counts per state and per reason at the top,
a lookup box (the host's ``lookup(query) -> visitor_id | None``, e.g. a user id
to the visitor it signed in as), one visitor's path through the machine in the
colour of its outcome, and what to check for its failure reason.

Visitors are never shown by their id (it is their cookie), user id or token:
- a *reference* names a visitor on screen: an HMAC of its id under a key derived
  from the host's secret, so nobody holding a cookie can compute a visitor's
  reference, and nobody can find a cookie from a reference;
- a *handle* opens one visitor: its id sealed (AES-GCM) under another key derived
  from the secret. Opening it is one store read, never a scan. Workers that share
  the secret share references and handles.

The page polls one URL once a second (the listing, with the selected visitor), so
it updates by itself and works across workers: every worker reads the same store.
It finds its own URLs from where it is served, so any prefix works.

This module only makes the page and the JSON bodies; which requests get them
(the routes, the guard, loopback-only by default) is decided by the HTTP core
(``statemachine.web.http``), on every framework.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from statemachine.protocol.policy import ActivationPolicy, Profile
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.replies import TrackerView
from statemachine.protocol.states import IN_FLIGHT, State
from statemachine.web.svg import diagram_svg, kind_of

MAX_LISTED: Final = 200
"""Visitors one listing reads at most; the counts say when there were more."""

MAX_QUERY: Final = 256
REF_LENGTH: Final = 16
REF: Final = re.compile(rf"[0-9a-f]{{{REF_LENGTH}}}")
_HANDLE: Final = re.compile(r"[A-Za-z0-9_-]{40,512}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_AAD: Final = b"secured-activation inspector handle v1"

Lookup = Callable[[str], "str | Awaitable[str | None] | None"]
"""The host's search: what a support person types (a user id, say) to a visitor id."""


class References:
    """Names for visitors on screen (keyed hashes) and handles that open one (sealed ids)."""

    def __init__(self, secret: bytes | str | None = None) -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None and len(secret) < 16:
            raise ValueError("the inspector's secret must be at least 16 bytes")
        # Without a secret, references hold for this process only: pass one to share them.
        root = secret if secret is not None else secrets.token_bytes(32)
        self._ref_key = hmac.new(root, b"inspector reference", hashlib.sha256).digest()
        self._seal = AESGCM(hmac.new(root, b"inspector handle", hashlib.sha256).digest())

    def __repr__(self) -> str:  # never the keys
        return "References()"

    def ref(self, visitor_id: str) -> str:
        """A visitor's name on screen: a keyed hash, stable for one secret."""
        raw = visitor_id.encode("utf-8", "surrogatepass")
        return hmac.new(self._ref_key, raw, hashlib.sha256).hexdigest()[:REF_LENGTH]

    def handle(self, visitor_id: str) -> str:
        """An opaque token that opens this visitor in one read (sealed, never readable)."""
        nonce = secrets.token_bytes(12)
        sealed = self._seal.encrypt(nonce, visitor_id.encode("utf-8", "surrogatepass"), _AAD)
        return base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")

    def open(self, handle: object) -> str | None:
        """The visitor id a handle was made for, or None for anything else."""
        if not isinstance(handle, str) or not _HANDLE.fullmatch(handle):
            return None
        try:
            raw = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4))
            plain = self._seal.decrypt(raw[:12], raw[12:], _AAD)
            return plain.decode("utf-8", "surrogatepass")
        except (InvalidTag, ValueError, binascii.Error):
            return None


def page_html() -> str:
    return resources.files("statemachine.web").joinpath("static/inspector.html").read_text("utf-8")


def check_query(value: object) -> str:
    """What a support person typed, or ValueError (the core answers 400)."""
    if not isinstance(value, str) or not 0 < len(value.strip()) <= MAX_QUERY:
        raise ValueError(f"the query must be 1 to {MAX_QUERY} characters")
    if _CONTROL.search(value):
        raise ValueError("the query must not contain control characters")
    return value.strip()


def reason_body(reason: FailureReason | None) -> dict[str, str] | None:
    if reason is None:
        return None
    return {"name": reason.name, "message": reason.message, "remediation": reason.remediation}


def row_body(names: References, key: str, view: TrackerView) -> dict[str, Any]:
    return {
        "ref": names.ref(key),
        "handle": names.handle(key),
        "state": view.state.value,
        "kind": kind_of(view.state),
        "since": view.since,
        "attempts": view.attempts,
        "reason": reason_body(view.reason),
        "authenticated_until": view.authenticated_until,
    }


def damaged_row(names: References, key: str) -> dict[str, Any]:
    """A record nobody can read (damaged, or an unknown format): shown, never a failed page."""
    return {
        "ref": names.ref(key),
        "handle": names.handle(key),
        "state": "damaged",
        "kind": "damaged",
        "since": 0.0,
        "attempts": 0,
        "reason": None,
        "authenticated_until": None,
    }


def damaged_body(profile: Profile, names: References, key: str) -> dict[str, Any]:
    """One damaged record: nothing to draw but the machine; a logout repairs it."""
    return {**damaged_row(names, key), "history": [], "flows": 0, "svg": diagram_svg(profile)}


def listing_body(
    policy: ActivationPolicy,
    names: References,
    found: Sequence[tuple[str, TrackerView]],
    *,
    damaged: Sequence[str] = (),
    more: bool = False,
) -> dict[str, Any]:
    """``{prefix}/visitors``: the counts per state and reason, and the visitors, newest first
    (records nobody can read last, as ``damaged``)."""
    ordered = sorted(found, key=lambda item: item[1].since, reverse=True)
    states = Counter(view.state.value for _, view in ordered)
    reasons = Counter(view.reason.name for _, view in ordered if view.reason is not None)
    return {
        "policy": str(policy.name),
        "counts": {
            "visitors": len(ordered),
            "more": more,
            "damaged": len(damaged),
            "states": {state.value: states.get(state.value, 0) for state in State},
            "kinds": dict(Counter(kind_of(view.state) for _, view in ordered)),
            "reasons": dict(sorted(reasons.items())),
        },
        "visitors": [
            *(row_body(names, key, view) for key, view in ordered),
            *(damaged_row(names, key) for key in damaged),
        ],
    }


def visitor_body(
    profile: Profile, names: References, key: str, view: TrackerView
) -> dict[str, Any]:
    """One visitor: its row, its trail (ended flows too, after a logout) and its diagram."""
    history = view.history
    visited = {e.source for e in history} | {e.dest for e in history}
    taken = {(e.source, e.dest) for e in history}
    return {
        **row_body(names, key, view),
        "history": [{**entry.to_dict(), "reason": reason_body(entry.reason)} for entry in history],
        # A flow starts where the trail leaves a settled state for one in flight.
        "flows": sum(1 for e in history if e.source not in IN_FLIGHT and e.dest in IN_FLIGHT),
        "mint_budget_left": view.mint_budget_left,  # tokens its budget still allows
        "svg": diagram_svg(profile, view.state, visited, taken),
    }

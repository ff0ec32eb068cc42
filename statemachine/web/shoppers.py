"""Anonymous shoppers: what the token endpoint answers when nobody is signed in.

A retail page calls ``SecuredActivation.activate()`` on every page load, signed in
or not. When the host's provider callable gives ``None`` (nobody signed in), the
defensive policy does not activate the tag, and that answer needs no record:
nothing is in flight and nothing was handed out, so the store is not written
(a forged cookie costs one read). The anonymous policy activates anonymously,
which is a flow the tracker follows like any other. Either way the answer says
``"signedIn": false``, so the page shows "not signed in" rather than an alarm.

Framework-neutral: the adapters read the visitor's view and pass it here.
"""

from __future__ import annotations

from typing import Any, Final

from statemachine.policy import ActivationPolicy, Fallback
from statemachine.reasons import FailureReason
from statemachine.replies import TrackerView
from statemachine.states import State

SIGNED_IN: Final = "signedIn"

_NO_RECORD_NEEDED: Final = frozenset({State.UNAUTHENTICATED, State.BLOCKED})


def nobody_signed_in(policy: ActivationPolicy, view: TrackerView | None) -> dict[str, Any] | None:
    """The answer without touching the store, or ``None`` when the tracker must decide.

    The tracker decides under the anonymous policy (an anonymous activation is a
    flow), and for a visitor it holds in flight, authenticated or anonymous (a flow
    to refuse, or a session to end by the policy's rules).
    """
    if Fallback(policy.on_token_failure) is Fallback.ANONYMOUS:
        return None
    if view is not None and view.state not in _NO_RECORD_NEEDED:
        return None
    return {
        "activate": False,
        "reason": FailureReason.TOKEN_UNAVAILABLE.message,
        SIGNED_IN: False,
    }


def mark_not_signed_in(body: dict[str, Any]) -> dict[str, Any]:
    """The tracker's answer for a visitor nobody signed in, marked so the page can say so."""
    return {**body, SIGNED_IN: False}

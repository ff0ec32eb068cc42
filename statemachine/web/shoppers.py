"""Anonymous shoppers: what the token endpoint answers when nobody is signed in.

A retail page calls ``SecuredActivation.activate()`` on every page load, signed in
or not. When the host's provider callable gives ``None`` (nobody signed in), the
defensive policy does not activate the tag, and that answer needs no record:
nothing is in flight and nothing was handed out, so the store is not written
(a forged cookie costs the store nothing). The anonymous policy activates anonymously,
which is a flow the tracker follows like any other. Either way the answer says
``"signedIn": false``, so the page shows "not signed in" rather than an alarm.

Framework-neutral: the HTTP core asks it before the tracker. A visitor who signs
out of the brand should be logged out of the chat too (``SecuredActivation.logout()``),
since a session the store still holds is not ended by this answer.
"""

from __future__ import annotations

from typing import Any, Final

from statemachine.policy import ActivationPolicy, Fallback
from statemachine.reasons import FailureReason

SIGNED_IN: Final = "signedIn"


def nobody_signed_in(policy: ActivationPolicy) -> dict[str, Any] | None:
    """The answer without touching the store, or ``None`` when the tracker must decide.

    Under a policy that blocks when no token can be had, nobody signed in means
    "do not activate": no read, no write. A policy that falls back runs the
    flow (its anonymous activation is tracked like any other).
    """
    if Fallback(policy.on_token_failure) is Fallback.ANONYMOUS:
        return None
    return {
        "activate": False,
        "reason": FailureReason.TOKEN_UNAVAILABLE.message,
        SIGNED_IN: False,
    }


def mark_not_signed_in(body: dict[str, Any]) -> dict[str, Any]:
    """The tracker's answer for a visitor nobody signed in, marked so the page can say so."""
    return {**body, SIGNED_IN: False}

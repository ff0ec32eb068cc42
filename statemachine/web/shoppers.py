"""Anonymous shoppers: what the token endpoint answers when nobody is signed in.

A retail page calls ``SecuredActivation.activate()`` on every page load, signed in
or not. When the host's provider callable gives ``None`` (nobody signed in), the
defensive policy does not activate the tag, and that answer needs no record:
nothing is in flight and nothing was handed out, so the store is not written
(a forged cookie costs the store nothing). The anonymous policy activates anonymously,
which is a flow the tracker follows like any other. Either way the answer says
``"signedIn": false``, so the page shows "not signed in" rather than an alarm.

The tracker gives the policy's answer (under a blocking policy without touching the
store); the HTTP core marks it here. A visitor who signs out of the brand should be
logged out of the chat too (``SecuredActivation.logout()``), since a session the store
still holds is not ended by that answer.
"""

from __future__ import annotations

from typing import Any, Final

SIGNED_IN: Final = "signedIn"


def mark_not_signed_in(body: dict[str, Any]) -> dict[str, Any]:
    """The tracker's answer for a visitor nobody signed in, marked so the page can say so."""
    return {**body, SIGNED_IN: False}

"""The engine's vocabulary: where a session can be, and what can happen to it.

States and triggers are plain ``str`` enums so that they print, compare and
serialise as the strings the platform and the diagrams use.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    UNAUTHENTICATED = "unauthenticated"
    FETCHING_TOKEN = "fetching_token"
    ACTIVATING = "activating"
    RETRYING = "retrying"
    ACTIVATING_ANONYMOUS = "activating_anonymous"
    AUTHENTICATED = "authenticated"
    ANONYMOUS = "anonymous"
    BLOCKED = "blocked"

    @property
    def in_flight(self) -> bool:
        """A flow is running: the session waits on the provider, the activator or a backoff."""
        return self in IN_FLIGHT


IN_FLIGHT = frozenset(
    {State.FETCHING_TOKEN, State.ACTIVATING, State.RETRYING, State.ACTIVATING_ANONYMOUS}
)
RESTING = frozenset(s for s in State if s not in IN_FLIGHT)


class Trigger(StrEnum):
    """Everything that can move a session.

    The first three are asked for by the host and start a flow; the next seven
    are reported by a driver (async or blocking) about the I/O it performed;
    ``logout`` and ``cancel`` end things. ``session_expired`` re-verifies
    once the platform session's lifetime is over; the three refresh triggers
    keep an authenticated visitor authenticated while a fresh token is
    fetched, or follow the policy when it cannot be. The last two exist for
    the tag-driven tracker only, which learns about the tag's activation only
    through token requests and reports (see ``TRACKER_TRIGGERS``).
    """

    ACTIVATE = "activate"
    ACTIVATE_ANONYMOUSLY = "activate_anonymously"
    REVERIFY = "reverify"
    TOKEN_RECEIVED = "token_received"
    TOKEN_FAILED = "token_failed"
    ACTIVATION_SUCCEEDED = "activation_succeeded"
    ACTIVATION_FAILED = "activation_failed"
    BACKOFF_ELAPSED = "backoff_elapsed"
    ANONYMOUS_SUCCEEDED = "anonymous_succeeded"
    ANONYMOUS_FAILED = "anonymous_failed"
    LOGOUT = "logout"
    CANCEL = "cancel"
    SESSION_EXPIRED = "session_expired"
    TOKEN_REFRESHED = "token_refreshed"
    REFRESH_FAILED = "refresh_failed"
    REFRESH_REJECTED = "refresh_rejected"
    ACTIVATION_FAILED_FINAL = "activation_failed_final"
    LEASE_EXPIRED = "lease_expired"


FLOW_STARTS = frozenset({Trigger.ACTIVATE, Trigger.ACTIVATE_ANONYMOUSLY, Trigger.REVERIFY})

TRACKER_TRIGGERS = frozenset({Trigger.ACTIVATION_FAILED_FINAL, Trigger.LEASE_EXPIRED})
"""Triggers only the tracker fires: an engine-driven session owns its flow and never sees them."""

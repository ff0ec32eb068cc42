"""The transition table: the one place that says how a session moves.

Like h11's ``_state.py``, the protocol is data. The ``transitions`` machine,
the diagrams, the CLI's descriptions and the per-transition tests are all
derived from the tuples below, so none of them can drift from the others.

A row may belong to only some policies (``branch``): the defensive machine
simply has no edge into ``activating_anonymous``. Rows sharing a source and a
trigger are tried in order; the last of each group has no guard, so every
allowed trigger has exactly one outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from statemachine.protocol.policy import Fallback, Profile
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.states import IN_FLIGHT, TRACKER_TRIGGERS, State, Trigger


class Guard(StrEnum):
    """Named conditions; the value is the core's method that evaluates it."""

    CAN_RETRY = "guard_can_retry"

    @property
    def label(self) -> str:
        return _GUARD_LABELS[self]


_GUARD_LABELS = {Guard.CAN_RETRY: "retryable reason and attempts <= max_retries"}


class Action(StrEnum):
    """Named effects on the session's data; the value is the core's method."""

    BEGIN_SECURED = "action_begin_secured"
    BEGIN_ANONYMOUS = "action_begin_anonymous"
    ACCEPT_TOKEN = "action_accept_token"
    RECORD_FAILURE = "action_record_failure"
    RECORD_FALLBACK_FAILURE = "action_record_fallback_failure"
    FORGET_VISITOR = "action_forget_visitor"
    MARK_CANCELLED = "action_mark_cancelled"
    RECORD_REFRESH = "action_record_refresh"
    RECORD_REFRESH_FAILURE = "action_record_refresh_failure"


Decision = Literal["on_token_failure", "on_activation_failure"]


@dataclass(frozen=True, slots=True)
class Branch:
    """A row that exists only for policies making this decision."""

    decision: Decision
    fallback: Fallback

    def holds_for(self, profile: Profile) -> bool:
        return bool(getattr(profile, self.decision) == self.fallback)


@dataclass(frozen=True, slots=True)
class Row:
    source: State
    trigger: Trigger
    dest: State
    why: str
    guard: Guard | None = None
    branch: Branch | None = None
    actions: tuple[Action, ...] = ()

    @property
    def tracker_only(self) -> bool:
        """Fired only by the tag-driven tracker; engine-driven sessions never take it."""
        return self.trigger in TRACKER_TRIGGERS


_TOKEN_FALLBACK = Branch("on_token_failure", Fallback.ANONYMOUS)
_TOKEN_BLOCK = Branch("on_token_failure", Fallback.BLOCK)
_ACTIVATION_FALLBACK = Branch("on_activation_failure", Fallback.ANONYMOUS)
_ACTIVATION_BLOCK = Branch("on_activation_failure", Fallback.BLOCK)

S, T, A = State, Trigger, Action

TRANSITIONS: tuple[Row, ...] = (
    # Starting a secured flow.
    Row(
        S.UNAUTHENTICATED,
        T.ACTIVATE,
        S.FETCHING_TOKEN,
        "the host asks for a secured activation",
        actions=(A.BEGIN_SECURED,),
    ),
    Row(
        S.ANONYMOUS,
        T.ACTIVATE,
        S.FETCHING_TOKEN,
        "an anonymous visitor signs in: upgrade to secured",
        actions=(A.BEGIN_SECURED,),
    ),
    Row(
        S.BLOCKED,
        T.ACTIVATE,
        S.FETCHING_TOKEN,
        "the next page load tries again",
        actions=(A.BEGIN_SECURED,),
    ),
    Row(
        S.AUTHENTICATED,
        T.SESSION_EXPIRED,
        S.FETCHING_TOKEN,
        "the platform session's lifetime is over: verify the identity again",
        actions=(A.BEGIN_SECURED,),
    ),
    # Starting an anonymous flow on the host's request.
    Row(
        S.UNAUTHENTICATED,
        T.ACTIVATE_ANONYMOUSLY,
        S.ACTIVATING_ANONYMOUS,
        "the host asks for an anonymous activation",
        actions=(A.BEGIN_ANONYMOUS,),
    ),
    Row(
        S.BLOCKED,
        T.ACTIVATE_ANONYMOUSLY,
        S.ACTIVATING_ANONYMOUS,
        "the host chooses anonymous after a block",
        actions=(A.BEGIN_ANONYMOUS,),
    ),
    # The token provider answered.
    Row(
        S.FETCHING_TOKEN,
        T.TOKEN_RECEIVED,
        S.ACTIVATING,
        "a token arrived: activate with it (one more attempt)",
        actions=(A.ACCEPT_TOKEN,),
    ),
    Row(
        S.FETCHING_TOKEN,
        T.TOKEN_FAILED,
        S.ACTIVATING_ANONYMOUS,
        "no token: the policy falls back to anonymous (never retried)",
        branch=_TOKEN_FALLBACK,
        actions=(A.RECORD_FAILURE,),
    ),
    Row(
        S.FETCHING_TOKEN,
        T.TOKEN_FAILED,
        S.BLOCKED,
        "no token: the policy refuses to activate (never retried)",
        branch=_TOKEN_BLOCK,
        actions=(A.RECORD_FAILURE,),
    ),
    # The secured activation answered.
    Row(S.ACTIVATING, T.ACTIVATION_SUCCEEDED, S.AUTHENTICATED, "the platform accepted the token"),
    Row(
        S.ACTIVATING,
        T.ACTIVATION_FAILED,
        S.RETRYING,
        "a retryable failure with retries left: back off, then fetch a fresh token",
        guard=Guard.CAN_RETRY,
        actions=(A.RECORD_FAILURE,),
    ),
    Row(
        S.ACTIVATING,
        T.ACTIVATION_FAILED,
        S.ACTIVATING_ANONYMOUS,
        "a final failure: the policy falls back to anonymous",
        branch=_ACTIVATION_FALLBACK,
        actions=(A.RECORD_FAILURE,),
    ),
    Row(
        S.ACTIVATING,
        T.ACTIVATION_FAILED,
        S.BLOCKED,
        "a final failure: the policy refuses to fall back",
        branch=_ACTIVATION_BLOCK,
        actions=(A.RECORD_FAILURE,),
    ),
    Row(
        S.RETRYING,
        T.BACKOFF_ELAPSED,
        S.FETCHING_TOKEN,
        "the backoff is over: ask for a fresh token (tokens live about a minute)",
    ),
    # The anonymous activation answered.
    Row(
        S.ACTIVATING_ANONYMOUS,
        T.ANONYMOUS_SUCCEEDED,
        S.ANONYMOUS,
        "the platform accepted the anonymous activation",
    ),
    Row(
        S.ACTIVATING_ANONYMOUS,
        T.ANONYMOUS_FAILED,
        S.BLOCKED,
        "even the anonymous activation failed",
        actions=(A.RECORD_FALLBACK_FAILURE,),
    ),
    # Leaving.
    Row(
        S.AUTHENTICATED,
        T.LOGOUT,
        S.UNAUTHENTICATED,
        "logout: forget the visitor",
        actions=(A.FORGET_VISITOR,),
    ),
    Row(
        S.ANONYMOUS,
        T.LOGOUT,
        S.UNAUTHENTICATED,
        "logout: forget the visitor",
        actions=(A.FORGET_VISITOR,),
    ),
    Row(
        S.BLOCKED,
        T.LOGOUT,
        S.UNAUTHENTICATED,
        "logout: forget the blocked visitor",
        actions=(A.FORGET_VISITOR,),
    ),
    # Refreshing: the visitor stays authenticated while a fresh token is fetched.
    Row(
        S.AUTHENTICATED,
        T.TOKEN_REFRESHED,
        S.AUTHENTICATED,
        "a fresh token while authenticated: the visitor stays authenticated",
        actions=(A.RECORD_REFRESH,),
    ),
    Row(
        S.AUTHENTICATED,
        T.REFRESH_FAILED,
        S.ACTIVATING_ANONYMOUS,
        "no token for the refresh: the policy falls back to anonymous",
        branch=_TOKEN_FALLBACK,
        actions=(A.RECORD_REFRESH_FAILURE,),
    ),
    Row(
        S.AUTHENTICATED,
        T.REFRESH_FAILED,
        S.BLOCKED,
        "no token for the refresh: the policy refuses to keep the visitor",
        branch=_TOKEN_BLOCK,
        actions=(A.RECORD_REFRESH_FAILURE,),
    ),
    Row(
        S.AUTHENTICATED,
        T.REFRESH_REJECTED,
        S.ACTIVATING_ANONYMOUS,
        "the platform refused the refreshed token: the policy falls back",
        branch=_ACTIVATION_FALLBACK,
        actions=(A.RECORD_REFRESH_FAILURE,),
    ),
    Row(
        S.AUTHENTICATED,
        T.REFRESH_REJECTED,
        S.BLOCKED,
        "the platform refused the refreshed token: the policy refuses to fall back",
        branch=_ACTIVATION_BLOCK,
        actions=(A.RECORD_REFRESH_FAILURE,),
    ),
    # The tag-driven tracker: what only token requests and reports reveal.
    Row(
        S.ACTIVATING,
        T.ACTIVATION_FAILED_FINAL,
        S.ACTIVATING_ANONYMOUS,
        "the tag reports a failure after its own retries: the policy falls back",
        branch=_ACTIVATION_FALLBACK,
        actions=(A.RECORD_FAILURE,),
    ),
    Row(
        S.ACTIVATING,
        T.ACTIVATION_FAILED_FINAL,
        S.BLOCKED,
        "the tag reports a failure after its own retries: the policy refuses to fall back",
        branch=_ACTIVATION_BLOCK,
        actions=(A.RECORD_FAILURE,),
    ),
    *(
        Row(
            source,
            T.LEASE_EXPIRED,
            S.UNAUTHENTICATED,
            "the flow went silent past its lease: free the visitor for the next flow",
            actions=(A.MARK_CANCELLED,),
        )
        for source in (S.FETCHING_TOKEN, S.ACTIVATING, S.ACTIVATING_ANONYMOUS)
    ),
    *(
        Row(
            source,
            T.CANCEL,
            S.UNAUTHENTICATED,
            "the host cancelled the flow or shut down: nothing stays in flight",
            actions=(A.MARK_CANCELLED,),
        )
        for source in (S.FETCHING_TOKEN, S.ACTIVATING, S.RETRYING, S.ACTIVATING_ANONYMOUS)
    ),
)

del S, T, A

# Host requests that are refused without moving: the tag's two double-activation
# answers. Anything neither here nor in TRANSITIONS raises TransitionNotAllowed.
REJECTIONS: dict[tuple[State, Trigger], FailureReason] = {
    **{(s, Trigger.ACTIVATE): FailureReason.LOGIN_ONGOING for s in IN_FLIGHT},
    **{(s, Trigger.ACTIVATE_ANONYMOUSLY): FailureReason.LOGIN_ONGOING for s in IN_FLIGHT},
    **{(s, Trigger.REVERIFY): FailureReason.LOGIN_ONGOING for s in IN_FLIGHT},
    (State.AUTHENTICATED, Trigger.ACTIVATE): FailureReason.ALREADY_ACTIVATED,
    (State.AUTHENTICATED, Trigger.ACTIVATE_ANONYMOUSLY): FailureReason.ALREADY_ACTIVATED,
    (State.ANONYMOUS, Trigger.ACTIVATE_ANONYMOUSLY): FailureReason.ALREADY_ACTIVATED,
}


# Host requests answered by a refresh: the state stays put while a fresh token is fetched and
# activated, then ``token_refreshed`` / ``refresh_failed`` / ``refresh_rejected`` decide.
#
# Special case (as h11 documents its own beside its table): a refresh in progress is the one
# piece of state outside this table. The visitor stays ``authenticated`` while it runs, so no
# state can say "refreshing"; the core keeps a flag instead (``ActivationCore.refreshing``),
# set by ``ActivationCore.refresh()`` and cleared when the refresh ends (its effects name
# ``token_refreshed`` / ``refresh_failed`` / ``refresh_rejected`` as their triggers), is
# cancelled, or the visitor logs out. While it is set, a flow start is refused
# (``LOGIN_ONGOING``), and an expired session does not re-verify under the running refresh.
# ``ActivationCore.refreshes()`` is the one answer to "does this request refresh?", for
# sessions (``reverify``, ``refresh_ahead``) and trackers (a token request while
# authenticated) alike. The flag is never stored: a tracker's refresh writes nothing until it
# settles, and takes the refresh up again on the record it settles on.
REFRESHES: frozenset[tuple[State, Trigger]] = frozenset({(State.AUTHENTICATED, Trigger.REVERIFY)})


class Work(StrEnum):
    """What a driver must do on entering a state: the I/O the core asks for."""

    FETCH_TOKEN = "ask the token provider for a token"
    ACTIVATE_SECURED = "call the activator with the secured option"
    BACK_OFF = "wait out the retry delay"
    ACTIVATE_ANONYMOUS = "call the activator with the anonymous option"
    FINISH = "report the result"


ON_ENTER: dict[State, Work] = {
    State.FETCHING_TOKEN: Work.FETCH_TOKEN,
    State.ACTIVATING: Work.ACTIVATE_SECURED,
    State.RETRYING: Work.BACK_OFF,
    State.ACTIVATING_ANONYMOUS: Work.ACTIVATE_ANONYMOUS,
    **{s: Work.FINISH for s in State if s not in IN_FLIGHT},
}

STATE_MEANINGS: dict[State, str] = {
    State.UNAUTHENTICATED: "initial; nothing activated",
    State.FETCHING_TOKEN: "the host's token provider has been asked for a token",
    State.ACTIVATING: "a secured activation is in flight (attempt n)",
    State.RETRYING: "attempt n failed with a retryable reason; waiting out the backoff",
    State.ACTIVATING_ANONYMOUS: "an anonymous activation is in flight (fallback or host request)",
    State.AUTHENTICATED: "the secured activation succeeded",
    State.ANONYMOUS: "the anonymous activation succeeded",
    State.BLOCKED: "the policy refused to activate, or even the fallback failed",
}


def rows_for(profile: Profile) -> tuple[Row, ...]:
    """The rows a machine for ``profile`` has, in table order."""
    return tuple(r for r in TRANSITIONS if r.branch is None or r.branch.holds_for(profile))


def allowed_triggers(state: State, rows: Iterable[Row] = TRANSITIONS) -> tuple[Trigger, ...]:
    """Triggers with a row from ``state``, in Trigger order (for error messages and tests)."""
    present = {r.trigger for r in rows if r.source == state}
    return tuple(t for t in Trigger if t in present)

"""The sans-IO core: one per session, driven by events, answering with effects.

The core owns the session's state and data and moves only through the shared
``transitions`` machine built from the table. It performs no I/O and never
sleeps, so both drivers (asyncio and blocking) share every rule, and tests can
step it one event at a time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from statemachine.engine._effects import (
    ActivationFailed,
    Answer,
    BackOff,
    CallActivator,
    Effect,
    FetchToken,
    Finish,
    TokenFailed,
    TokenReceived,
)
from statemachine.engine._machine import (
    AUTHENTICATED,
    IN_FLIGHT_NAMES,
    NO_REASON_NAMES,
    STATE_OF,
    UNAUTHENTICATED,
    EventArgs,
    dispatch_for,
    refusal,
    starts_flow,
    work_on_entering,
)
from statemachine.protocol.options import AuthenticationOption
from statemachine.protocol.policy import ActivationPolicy, session_lifetime
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.results import FAILURE, SUCCESS, ActivationResult, HistoryEntry
from statemachine.protocol.states import State, Trigger
from statemachine.protocol.table import (
    REFRESHES,
    Work,
)
from statemachine.signals import logs
from statemachine.signals.events import TransitionEvent

HISTORY_LIMIT: Final = 256
"""Older entries are dropped past this, so a long-lived session stays small."""

_ANONYMOUS_OPTION: Final = AuthenticationOption.anonymous()
_NO_TOKEN_OPTION: Final = AuthenticationOption.secured(None)


def new_session_id() -> str:
    return os.urandom(8).hex()


class CoreState(NamedTuple):
    """Everything a core knows apart from its policy and clock: what a snapshot carries.

    The token is never part of it, only its fingerprint: a restored core knows
    which token it was authenticated with, not the token.
    """

    session_id: str
    state: State
    flow: Trigger | None
    attempts: int
    reason: FailureReason | None
    token_fingerprint: str | None
    since: float  # when ``state`` was entered (epoch seconds)
    flow_started_at: float | None
    history: tuple[HistoryEntry, ...]  # oldest first


class ActivationCore:
    """One visitor's activation state; the model the shared machine moves."""

    __slots__ = (
        "_clock",
        "_events",
        "_fingerprint",
        "_fsm_state",
        "_history",
        "_lifetime",
        "_log",
        "_machine",
        "_policy_name",
        "attempts",
        "flow",
        "flow_started_at",
        "option",
        "policy",
        "reason",
        "refreshing",
        "session_id",
        "since",
    )

    def __init__(
        self,
        policy: ActivationPolicy,
        session_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._machine = dispatch_for(policy, ActivationCore)
        self._clock = clock  # wall-clock seconds: timestamps travel between processes
        self._fsm_state: str = UNAUTHENTICATED  # the state's name: see machine.MODEL_ATTRIBUTE
        self._history: list[HistoryEntry] | None = None
        self._log: Any = None
        self.policy = policy
        self.session_id = session_id or new_session_id()
        self.attempts = 0
        self.flow: Trigger | None = None
        self.option: AuthenticationOption | None = None
        self.reason: FailureReason | None = None
        self.since = clock()  # when the current state was entered (epoch seconds)
        self._fingerprint: str | None = None  # a restored token's fingerprint (never the token)
        self._lifetime = session_lifetime(policy)
        self._policy_name = str(policy.name)
        self.flow_started_at: float | None = None
        self.refreshing = False  # a refresh runs while the visitor stays authenticated
        self._events: list[TransitionEvent] | None = None  # what the driver has not taken yet

    # -- reading ---------------------------------------------------------
    @property
    def state(self) -> State:
        return STATE_OF[self._fsm_state]

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        return tuple(self._history or ())

    @property
    def token_fingerprint(self) -> str | None:
        """The current token's fingerprint: what snapshots and views show instead of it."""
        option = self.option
        if option is not None and option.token is not None:
            return option.fingerprint
        return self._fingerprint

    @property
    def authenticated_until(self) -> float | None:
        """Epoch seconds when the platform session ends; None unless authenticated."""
        if self._fsm_state != AUTHENTICATED:
            return None
        return self.since + self._lifetime

    def expired(self, now: float | None = None) -> bool:
        until = self.authenticated_until
        return until is not None and (self._clock() if now is None else now) >= until

    @property
    def logger(self) -> Any:
        # Bound on first use: an idle session never pays for a logger.
        if self._log is None:
            self._log = logs.session_logger(self.session_id)
        return self._log

    def __repr__(self) -> str:
        return (
            f"ActivationCore(session_id={self.session_id!r}, state={self._fsm_state!r}, "
            f"policy={self.policy.name!r}, attempts={self.attempts})"
        )

    # -- export and restore ----------------------------------------------
    def export(self, history_limit: int = HISTORY_LIMIT) -> CoreState:
        """This core's state, with the newest ``history_limit`` entries of its history."""
        history = self._history
        return CoreState(
            self.session_id,
            STATE_OF[self._fsm_state],
            self.flow,
            self.attempts,
            self.reason,
            self.token_fingerprint,
            self.since,
            self.flow_started_at,
            tuple(history[-history_limit:]) if history and history_limit > 0 else (),
        )

    @classmethod
    def restore(
        cls,
        saved: CoreState,
        policy: ActivationPolicy,
        clock: Callable[[], float] = time.time,
    ) -> ActivationCore:
        """A core that goes on from ``saved`` (checked by whoever read it) under ``policy``."""
        core = cls(policy, saved.session_id, clock)
        core._fsm_state = saved.state.value
        core.flow = saved.flow
        core.attempts = saved.attempts
        core.reason = saved.reason
        core._fingerprint = saved.token_fingerprint
        core.since = saved.since
        core.flow_started_at = saved.flow_started_at
        core._history = list(saved.history[-HISTORY_LIMIT:]) or None
        return core

    # -- events ----------------------------------------------------------
    def begin(self, trigger: Trigger, now: float | None = None) -> Effect:
        """Start a flow, or answer the tag's refusal without moving.

        While authenticated: once the platform session is over, ``activate``
        and ``reverify`` re-verify (``session_expired``); before that,
        ``reverify`` refreshes (``refreshes``) — the visitor stays
        authenticated while a fresh token is fetched and activated.
        """
        if not starts_flow(trigger):
            raise ValueError(f"'{trigger.value}' does not start a flow")
        if self._fsm_state == AUTHENTICATED and trigger is not Trigger.ACTIVATE_ANONYMOUSLY:
            if self.expired(now) and not self.refreshing:
                effect = self.fire(Trigger.SESSION_EXPIRED)
                assert effect is not None
                return effect
            if self.refreshes(trigger, now):
                fetch = self.refresh()
                if fetch is not None:
                    return fetch  # otherwise one runs already: refused below, LOGIN_ONGOING
        refused = refusal(self._fsm_state, trigger)
        if refused is None and self.refreshing:
            refused = FailureReason.LOGIN_ONGOING
        if refused is not None:
            state = self.state
            logs.emit(
                self.logger.info,
                logs.REJECTED,
                state=state.value,
                trigger=trigger.value,
                reason=refused.name,
            )
            option = (
                _ANONYMOUS_OPTION if trigger is Trigger.ACTIVATE_ANONYMOUSLY else _NO_TOKEN_OPTION
            )
            return Finish(ActivationResult(FAILURE, option, state, refused, 0))
        effect = self.fire(trigger)
        assert effect is not None  # a flow start always leads to work
        return effect

    # -- refresh: the one piece of state outside the table (see table.REFRESHES) --
    def refreshes(
        self, trigger: Trigger, now: float | None = None, ahead: float | None = None
    ) -> bool:
        """Does ``trigger`` refresh this visitor now? Sessions and trackers both ask here.

        Yes for the table's ``REFRESHES`` (``reverify`` while authenticated),
        and for ``activate`` within ``ahead`` seconds of the platform session's
        end (a session's opt-in ``refresh_ahead``). Never once the session is
        over (``session_expired`` re-verifies instead). While a refresh runs the
        answer is still yes: a session's caller joins it, ``begin`` refuses.
        """
        until = self.authenticated_until
        if until is None:
            return False
        now = self._clock() if now is None else now
        if now >= until:
            return False
        if (State.AUTHENTICATED, trigger) in REFRESHES:
            return True
        return trigger is Trigger.ACTIVATE and ahead is not None and now >= until - ahead

    def refresh(self) -> FetchToken | None:
        """Start a refresh: fetch a token while the visitor stays authenticated.

        None when there is nothing to refresh (not authenticated) or one runs
        already. No transition happens until the refresh ends: ``complete``
        then fires ``token_refreshed``, ``refresh_failed`` or ``refresh_rejected``.
        """
        if self._fsm_state != AUTHENTICATED or self.refreshing:
            return None
        self.refreshing = True
        return FetchToken(
            1, self.policy.token_timeout, Trigger.TOKEN_REFRESHED, Trigger.REFRESH_FAILED
        )

    def fire(
        self,
        trigger: Trigger,
        *,
        option: AuthenticationOption | None = None,
        reason: FailureReason | None = None,
    ) -> Effect | None:
        """Apply one event; return the work the new state asks for.

        Raises ``TransitionNotAllowed`` (and changes nothing) when the table
        has no row for ``trigger`` in the current state.
        """
        source, dest = self._machine.move(self, trigger, option, reason)
        self._record(source, dest, trigger)
        return self._work_for(dest)

    def complete(self, effect: Effect, answer: Answer) -> Effect | None:
        """The driver performed ``effect`` and got ``answer``: take the effect's trigger.

        Every effect names its own triggers (success, failure), so this is one
        rule for flows and refreshes alike. The one exception is a refresh's
        token, which is activated before any transition (the visitor stays
        authenticated until the refresh ends).
        """
        if isinstance(effect, BackOff):
            return self.fire(Trigger.BACKOFF_ELAPSED)
        if isinstance(effect, Finish):
            raise ValueError("a finished flow has nothing to complete")
        refresh = effect.on_success is Trigger.TOKEN_REFRESHED
        if refresh and not (self.refreshing and self._fsm_state == AUTHENTICATED):
            return self._refresh_gone()  # logged out or cancelled while the refresh ran
        if isinstance(answer, TokenFailed | ActivationFailed):
            self.refreshing = False
            return self.fire(effect.on_failure, reason=answer.reason)
        if isinstance(effect, CallActivator):
            self.refreshing = False
            return self.fire(effect.on_success, option=effect.option)
        if not isinstance(answer, TokenReceived):
            raise ValueError(f"{type(answer).__name__} does not answer a token request")
        if refresh:  # activate the fresh token first; the refresh's own triggers follow
            timeout = self.policy.activation_timeout
            refreshed, rejected = Trigger.TOKEN_REFRESHED, Trigger.REFRESH_REJECTED
            return CallActivator(answer.option, 1, timeout, refreshed, rejected)
        return self.fire(effect.on_success, option=answer.option)

    def _refresh_gone(self) -> Finish:
        """Logged out or cancelled while the refresh ran: it ends and moves nothing."""
        self.refreshing = False
        result = ActivationResult(FAILURE, _NO_TOKEN_OPTION, self.state, FailureReason.CANCELLED, 0)
        return Finish(result)

    def cancel(self) -> Finish | None:
        """Leave any in-flight state; returns the CANCELLED result if a flow was running.

        A refresh is cancelled without a transition: the visitor stays
        authenticated (a cancelled refresh is no reason to downgrade anyone).
        """
        if self.refreshing:
            return self._refresh_gone()
        if not self.state.in_flight:
            return None
        effect = self.fire(Trigger.CANCEL)
        assert isinstance(effect, Finish)
        return effect

    # -- guards and actions (named in the table) -------------------------
    def guard_can_retry(self, event: EventArgs) -> bool:
        reason: FailureReason = event.kwargs["reason"]
        retry = self.policy.retry
        return self.attempts <= retry.max_retries and retry.should_retry(reason)

    def action_begin_secured(self, _event: EventArgs) -> None:
        self.flow = Trigger.ACTIVATE
        self.flow_started_at = self._clock()
        self.attempts = 0
        self.option = None
        self.reason = None
        self._fingerprint = None

    def action_begin_anonymous(self, _event: EventArgs) -> None:
        self.flow = Trigger.ACTIVATE_ANONYMOUSLY
        self.flow_started_at = self._clock()
        self.attempts = 0
        self.option = _ANONYMOUS_OPTION
        self.reason = None

    def action_accept_token(self, event: EventArgs) -> None:
        self.option = event.kwargs["option"]
        self.attempts += 1

    def action_record_failure(self, event: EventArgs) -> None:
        self.reason = event.kwargs["reason"]

    def action_record_fallback_failure(self, event: EventArgs) -> None:
        # After a secured failure, the result reports why the *secured* flow failed.
        if self.reason is None:
            self.reason = event.kwargs["reason"]

    def action_forget_visitor(self, _event: EventArgs) -> None:
        self.forget()

    def forget(self) -> None:
        """Forget the visitor's session (flow, attempts, reason, history, token) in place.

        The logout row does it; a tracker's logout also does it after cancelling a flow in
        flight, whose cancel row leaves the core unauthenticated but still remembering.
        """
        self.flow = None
        self.attempts = 0
        self.option = None
        self.reason = None
        self._history = None
        self._fingerprint = None
        self.flow_started_at = None
        self.refreshing = False

    def action_record_refresh(self, event: EventArgs) -> None:
        # A refresh is a one-attempt secured flow: it reports like one.
        self.flow = Trigger.ACTIVATE
        self.option = event.kwargs["option"]
        self.reason = None
        self.attempts = 1

    def action_record_refresh_failure(self, event: EventArgs) -> None:
        self.flow = Trigger.ACTIVATE
        self.attempts = 1
        self.option = None
        self._fingerprint = None
        self.reason = event.kwargs["reason"]

    def action_mark_cancelled(self, _event: EventArgs) -> None:
        self.reason = FailureReason.CANCELLED

    # -- internals -------------------------------------------------------
    def _record(self, source: str, dest: str, trigger: Trigger) -> None:
        """Keep the transition in the history and append its event for the driver."""
        reason = None if dest in NO_REASON_NAMES else self.reason
        self.since = at = self._clock()
        entry = HistoryEntry(STATE_OF[source], STATE_OF[dest], trigger, self.attempts, reason, at)
        if trigger is not Trigger.LOGOUT:
            history = self._history
            if history is None:
                history = self._history = []
            history.append(entry)
            if len(history) > HISTORY_LIMIT:
                del history[: len(history) - HISTORY_LIMIT]
        option = self.option  # the token_fingerprint property, inlined: this runs every step
        event = TransitionEvent(
            self.session_id,
            entry,
            option.fingerprint
            if option is not None and option.token is not None
            else self._fingerprint,
            self._policy_name,
            self.flow_started_at,
            source in IN_FLIGHT_NAMES and dest not in IN_FLIGHT_NAMES,
        )
        events = self._events
        if events is None:
            self._events = [event]
        else:
            events.append(event)
            if len(events) > HISTORY_LIMIT:  # nobody takes them (a core stepped by hand)
                del events[0]

    def take_events(self) -> Sequence[TransitionEvent]:
        """The transitions since the last call, oldest first: the driver publishes them.

        The core runs no listener: a session publishes after each step, a
        tracker only once its store has accepted the step.
        """
        events = self._events
        if events is None:
            return ()
        self._events = None
        return events

    def _work_for(self, dest: str) -> Effect | None:
        """The effect the table's ``ON_ENTER`` asks for on entering ``dest``."""
        work = work_on_entering(dest)
        policy = self.policy
        if work is Work.FETCH_TOKEN:
            return FetchToken(self.attempts + 1, policy.token_timeout)
        if work is Work.ACTIVATE_SECURED:
            assert self.option is not None
            return CallActivator(
                self.option,
                self.attempts,
                policy.activation_timeout,
                Trigger.ACTIVATION_SUCCEEDED,
                Trigger.ACTIVATION_FAILED,
            )
        if work is Work.BACK_OFF:
            return BackOff(max(0.0, float(policy.retry.delay(self.attempts))), self.attempts)
        if work is Work.ACTIVATE_ANONYMOUS:
            return CallActivator(
                _ANONYMOUS_OPTION,
                self.attempts,
                policy.activation_timeout,
                Trigger.ANONYMOUS_SUCCEEDED,
                Trigger.ANONYMOUS_FAILED,
            )
        if self.flow is None:
            return None  # logout: no flow to report on
        return Finish(self._result(STATE_OF[dest]))

    def _result(self, dest: State) -> ActivationResult:
        secured = self.flow is not Trigger.ACTIVATE_ANONYMOUSLY
        option = (self.option or _NO_TOKEN_OPTION) if secured else _ANONYMOUS_OPTION
        succeeded = dest is State.AUTHENTICATED or (dest is State.ANONYMOUS and not secured)
        self.flow = None
        if succeeded:
            until = self.authenticated_until
            return ActivationResult(SUCCESS, option, dest, None, self.attempts, until)
        return ActivationResult(FAILURE, option, dest, self.reason, self.attempts)

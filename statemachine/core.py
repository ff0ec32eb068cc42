"""The sans-IO core: one per session, driven by events, answering with effects.

The core owns the session's state and data and moves only through the shared
``transitions`` machine built from the table. It performs no I/O and never
sleeps, so both drivers (asyncio and blocking) share every rule, and tests can
step it one event at a time.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from statemachine import logs
from statemachine.effects import BackOff, CallActivator, Effect, FetchToken, Finish, Outcome
from statemachine.errors import ActivationError, TransitionNotAllowed
from statemachine.events import (
    DEFAULT_LISTENERS,
    Listener,
    TransitionEvent,
    log_listener_error,
    log_transition,
)
from statemachine.machine import Edge, compiled_for
from statemachine.options import SECURED, AuthenticationOption
from statemachine.policy import ActivationPolicy, Profile, session_lifetime
from statemachine.reasons import FailureReason
from statemachine.results import FAILURE, SUCCESS, ActivationResult, HistoryEntry
from statemachine.states import FLOW_STARTS, IN_FLIGHT, State, Trigger
from statemachine.table import (
    ON_ENTER,
    REFRESHES,
    REJECTIONS,
    Work,
    allowed_triggers,
    rows_for,
)
from statemachine.workers import WorkersExhausted

HISTORY_LIMIT: Final = 256
"""Older entries are dropped past this, so a long-lived session stays small."""

_ANONYMOUS_OPTION: Final = AuthenticationOption.anonymous()
_NO_TOKEN_OPTION: Final = AuthenticationOption.secured(None)


_STATES: Final = {s.value: s for s in State}
"""``State(value)`` goes through ``Enum.__call__``; a dict lookup is several times faster."""

_NO_REASON_DESTS: Final = frozenset(
    {State.FETCHING_TOKEN.value, State.ACTIVATING.value, State.AUTHENTICATED.value}
)
"""Entering these says nothing about a failure, so history shows no reason there."""

# Hot-path tables keyed by plain strings: an Enum member's ``.value`` and
# ``__hash__`` are Python-level calls, a str's are not.
_REFUSALS: Final = {(s.value, t.value): reason for (s, t), reason in REJECTIONS.items()}
_FLOW_START_NAMES: Final = frozenset(t.value for t in FLOW_STARTS)
_WORK: Final = {s.value: work for s, work in ON_ENTER.items()}


class EventArgs(NamedTuple):
    """What guards and actions read: the event's payload (``transitions``' EventData has it too)."""

    kwargs: dict[str, Any]


_NO_EDGES: Final[dict[str, Any]] = {}
_AUTHENTICATED: Final = State.AUTHENTICATED.value
_IN_FLIGHT_NAMES: Final = frozenset(s.value for s in IN_FLIGHT)


def new_session_id() -> str:
    return os.urandom(8).hex()


Entry = tuple[str, str, Trigger, int, FailureReason | None, float]
"""One history entry as the core keeps it: source, dest, trigger, attempt, reason, at."""


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
    history: tuple[Entry, ...]  # oldest first


class ActivationCore:
    """One visitor's activation state; the model the shared machine moves."""

    __slots__ = (
        "_awaiting",
        "_buffer",
        "_clock",
        "_events",
        "_fingerprint",
        "_fsm_state",
        "_history",
        "_lifetime",
        "_log",
        "_policy_name",
        "_profile",
        "attempts",
        "flow",
        "flow_started_at",
        "listeners",
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
        self._profile, self._events = _shape_of(policy)
        self._clock = clock  # wall-clock seconds: timestamps travel between processes
        self._fsm_state: str = State.UNAUTHENTICATED.value
        self._history: list[Entry] | None = None
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
        self.listeners: tuple[Listener, ...] = DEFAULT_LISTENERS
        self._buffer: list[TransitionEvent] | None = None  # set: hold events until flushed
        self._awaiting: list[Any] | None = None  # what async listeners returned

    # -- reading ---------------------------------------------------------
    @property
    def state(self) -> State:
        return _STATES[self._fsm_state]

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        # Stored as plain tuples; the public objects are built only when asked for.
        return tuple(
            HistoryEntry(_STATES[source], _STATES[dest], trigger, attempt, reason, at)
            for source, dest, trigger, attempt, reason, at in self._history or ()
        )

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
        if self._fsm_state != _AUTHENTICATED:
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
            _STATES[self._fsm_state],
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
        core._fsm_state = saved.state._value_
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
        ``reverify`` refreshes — the visitor stays authenticated while a
        fresh token is fetched and activated.
        """
        if trigger._value_ not in _FLOW_START_NAMES:
            raise ValueError(f"'{trigger.value}' does not start a flow")
        if self._fsm_state == _AUTHENTICATED and trigger is not Trigger.ACTIVATE_ANONYMOUSLY:
            if self.expired(now) and not self.refreshing:
                effect = self.fire(Trigger.SESSION_EXPIRED)
                assert effect is not None
                return effect
            if (State.AUTHENTICATED, trigger) in REFRESHES and not self.refreshing:
                self.refreshing = True
                return FetchToken(1, self.policy.token_timeout, True)
        refusal = _REFUSALS.get((self._fsm_state, trigger._value_))
        if refusal is None and self.refreshing:
            refusal = FailureReason.LOGIN_ONGOING
        if refusal is not None:
            state = self.state
            logs.emit(
                self.logger.info,
                logs.REJECTED,
                state=state.value,
                trigger=trigger.value,
                reason=refusal.name,
            )
            option = (
                _ANONYMOUS_OPTION if trigger is Trigger.ACTIVATE_ANONYMOUSLY else _NO_TOKEN_OPTION
            )
            return Finish(ActivationResult(FAILURE, option, state, refusal, 0))
        effect = self.fire(trigger)
        assert effect is not None  # a flow start always leads to work
        return effect

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
        source = self._fsm_state
        edges = self._events.get(trigger._value_, _NO_EDGES).get(source)
        if edges is None:
            state = _STATES[source]
            raise TransitionNotAllowed(
                state, trigger, allowed_triggers(state, rows_for(self._profile))
            )
        event = EventArgs({"option": option, "reason": reason})
        for dest, guards, actions in edges:
            if guards and not all(guard(self, event) for guard in guards):
                continue
            for action in actions:
                action(self, event)
            self._fsm_state = dest
            break
        else:  # pragma: no cover - the table's last row of a group has no guard
            raise RuntimeError(f"no row of the table matched {trigger.value} in {source}")
        self._record(source, dest, trigger)
        return self._work_for(dest)

    def complete(self, effect: Effect, outcome: Outcome) -> Effect | None:
        """Turn what a driver observed into the next event."""
        if isinstance(effect, FetchToken) and effect.refresh:
            return self._complete_refresh_token(outcome)
        if isinstance(effect, CallActivator) and effect.on_success is Trigger.TOKEN_REFRESHED:
            return self._complete_refresh_activation(effect, outcome)
        if isinstance(effect, FetchToken):
            token = self.read_token(outcome)
            if isinstance(token, FailureReason):
                return self.fire(Trigger.TOKEN_FAILED, reason=token)
            return self.fire(Trigger.TOKEN_RECEIVED, option=token)
        if isinstance(effect, CallActivator):
            if outcome.error is None:
                return self.fire(effect.on_success)
            return self.fire(effect.on_failure, reason=self._activation_failure(outcome.error))
        if isinstance(effect, BackOff):
            return self.fire(Trigger.BACKOFF_ELAPSED)
        raise ValueError("a finished flow has nothing to complete")

    def read_token(self, outcome: Outcome) -> AuthenticationOption | FailureReason:
        """The provider's answer as an option, or the failure the policy will judge."""
        error = outcome.error
        if isinstance(error, WorkersExhausted):  # our congestion, not the host's failure
            return FailureReason.WORKERS_EXHAUSTED
        token = _read_provider_output(outcome)
        failed = isinstance(token, FailureReason) and error is not None
        if failed and not isinstance(error, TimeoutError):
            logs.emit(self.logger.warning, logs.PROVIDER_ERROR, error_type=type(error).__name__)
        return token

    def _complete_refresh_token(self, outcome: Outcome) -> Effect | None:
        if not self._still_refreshing():
            return self._refresh_gone()
        token = self.read_token(outcome)
        if isinstance(token, FailureReason):
            self.refreshing = False
            return self.fire(Trigger.REFRESH_FAILED, reason=token)
        return CallActivator(
            token,
            1,
            self.policy.activation_timeout,
            Trigger.TOKEN_REFRESHED,
            Trigger.REFRESH_REJECTED,
        )

    def _complete_refresh_activation(
        self, effect: CallActivator, outcome: Outcome
    ) -> Effect | None:
        if not self._still_refreshing():
            return self._refresh_gone()
        self.refreshing = False
        if outcome.error is None:
            return self.fire(Trigger.TOKEN_REFRESHED, option=effect.option)
        return self.fire(Trigger.REFRESH_REJECTED, reason=self._activation_failure(outcome.error))

    def _still_refreshing(self) -> bool:
        return self.refreshing and self._fsm_state == _AUTHENTICATED

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
        reason = None if dest in _NO_REASON_DESTS else self.reason
        attempt = self.attempts
        self.since = at = self._clock()
        if trigger is not Trigger.LOGOUT:
            history = self._history
            if history is None:
                history = self._history = []
            history.append((source, dest, trigger, attempt, reason, at))
            if len(history) > HISTORY_LIMIT:
                del history[: len(history) - HISTORY_LIMIT]
        event = TransitionEvent(
            self.session_id,
            _STATES[source],
            _STATES[dest],
            trigger,
            attempt,
            reason,
            self.token_fingerprint,
            at,
            self._policy_name,
            self.flow_started_at,
            source in _IN_FLIGHT_NAMES and dest not in _IN_FLIGHT_NAMES,
        )
        if self._buffer is not None:
            self._buffer.append(event)
        else:
            self.dispatch(event)

    # -- listeners -------------------------------------------------------
    def hold_events(self) -> None:
        """Keep events until ``flush``: a tracker publishes only what its store accepted."""
        self._buffer = []

    def flush(self) -> None:
        held, self._buffer = self._buffer or [], None
        for event in held:
            self.dispatch(event)

    def dispatch(self, event: TransitionEvent) -> None:
        """Hand ``event`` to every listener; a failing listener is logged and changes nothing."""
        for listener in self.listeners:
            if listener is log_transition:  # the built-in log line, on this session's bound logger
                log_transition(event, self.logger)
                continue
            try:
                value = listener(event)
            except Exception as error:  # noqa: BLE001 - a listener must not change an outcome
                log_listener_error(error)
                continue
            if value is not None and inspect.isawaitable(value):
                if self._awaiting is None:
                    self._awaiting = []
                self._awaiting.append(value)

    def take_awaiting(self) -> list[Any]:
        """What async listeners returned since the last call: the driver awaits them."""
        awaiting, self._awaiting = self._awaiting or [], None
        return awaiting

    def _work_for(self, dest: str) -> Effect | None:
        """The effect the table's ``ON_ENTER`` asks for on entering ``dest``."""
        work = _WORK[dest]
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
        return Finish(self._result(_STATES[dest]))

    def _result(self, dest: State) -> ActivationResult:
        secured = self.flow is not Trigger.ACTIVATE_ANONYMOUSLY
        option = (self.option or _NO_TOKEN_OPTION) if secured else _ANONYMOUS_OPTION
        succeeded = dest is State.AUTHENTICATED or (dest is State.ANONYMOUS and not secured)
        self.flow = None
        if succeeded:
            until = self.authenticated_until
            return ActivationResult(SUCCESS, option, dest, None, self.attempts, until)
        return ActivationResult(FAILURE, option, dest, self.reason, self.attempts)

    def _activation_failure(self, error: BaseException) -> FailureReason:
        if isinstance(error, ActivationError):
            return error.reason
        if isinstance(error, TimeoutError):
            return FailureReason.ACTIVATION_TIMEOUT
        if isinstance(error, WorkersExhausted):
            return FailureReason.WORKERS_EXHAUSTED
        logs.emit(self.logger.warning, logs.ACTIVATOR_ERROR, error_type=type(error).__name__)
        return FailureReason.SERVER_ERROR


_Step = tuple[str, tuple[Any, ...], tuple[Any, ...]]
_Dispatch = dict[str, dict[str, tuple[_Step, ...]]]
_SHAPES: dict[tuple[object, object], tuple[Profile, _Dispatch]] = {}


def _shape_of(policy: ActivationPolicy) -> tuple[Profile, _Dispatch]:
    """The profile and machine events for ``policy``, looked up by its two raw decisions.

    ``Fallback`` is a ``StrEnum``, so ``"block"`` and ``Fallback.BLOCK`` share a
    key; at most four entries ever exist.
    """
    key = (policy.on_token_failure, policy.on_activation_failure)
    shape = _SHAPES.get(key)
    if shape is None:
        profile = Profile.of(policy)
        shape = _SHAPES[key] = (profile, _bind(compiled_for(profile)))
    return shape


def _bind(compiled: dict[str, dict[str, tuple[Edge, ...]]]) -> _Dispatch:
    """The machine's edges with guard and action names resolved to the core's functions once."""
    return {
        trigger: {
            source: tuple(
                (
                    edge.dest,
                    tuple(getattr(ActivationCore, name) for name in edge.guards),
                    tuple(getattr(ActivationCore, name) for name in edge.actions),
                )
                for edge in edges
            )
            for source, edges in sources.items()
        }
        for trigger, sources in compiled.items()
    }


def _read_provider_output(outcome: Outcome) -> AuthenticationOption | FailureReason:
    """Accept the three shapes a provider may return; anything else is its failure.

    Inspecting host output runs host code (a mapping's lookups, a ``str``
    subclass's methods); if that raises, the provider failed, like any other.
    """
    if outcome.error is not None or outcome.value is None:
        return FailureReason.TOKEN_UNAVAILABLE
    try:
        return _option_from(outcome.value)
    except Exception:  # noqa: BLE001 - hostile provider output is the provider's failure
        return FailureReason.INVALID_OPTION


def _option_from(value: object) -> AuthenticationOption | FailureReason:
    if isinstance(value, str):
        option = AuthenticationOption.secured(str.__str__(value))
    elif isinstance(value, AuthenticationOption):
        option = value
    elif isinstance(value, Mapping):
        inner = value.get("authenticationOption")
        if not isinstance(inner, Mapping):
            return FailureReason.INVALID_OPTION
        option = AuthenticationOption(str(inner.get("type")), inner.get("token"))
    else:
        return FailureReason.INVALID_OPTION
    token = option.token
    if option.type != SECURED or not isinstance(token, str):
        return FailureReason.INVALID_OPTION
    if type(token) is not str:  # a str subclass's methods are host code: keep the plain text
        token = str.__str__(token)
        option = AuthenticationOption.secured(token)
    if not str.strip(token):
        return FailureReason.INVALID_OPTION
    return option

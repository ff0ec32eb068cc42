"""One test per transition of the table, per policy profile that has it, and
one per (state, trigger) pair that the table does not allow.

Generated from the table: a new row without matching expectations fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from policies import AnonymousFallbackPolicy, DefensivePolicy, RetryPolicy
from statemachine import FailureReason, State, TransitionNotAllowed, Trigger
from statemachine.engine._core import ActivationCore
from statemachine.engine._effects import BackOff, CallActivator, FetchToken, Finish
from statemachine.protocol.policy import Fallback, Profile
from statemachine.protocol.results import FAILURE
from statemachine.protocol.states import FLOW_STARTS
from statemachine.protocol.table import (
    REFRESHES,
    REJECTIONS,
    TRANSITIONS,
    Action,
    Row,
    Work,
    rows_for,
)
from statemachine.signals.events import Listeners
from tests.model import ALL_PROFILES, apply, drive_to, path_to_row, profile_id, witness

RETRY = RetryPolicy(base_delay=0.0, max_delay=0.0, jitter=0.0)


@dataclass(frozen=True)
class _Policy:
    """A host-made policy object: the engine must accept any that fits the protocol."""

    on_token_failure: Fallback
    on_activation_failure: Fallback
    name: str = "custom"
    retry: Any = RETRY
    token_timeout: float | None = None
    activation_timeout: float | None = None


def policy_for(profile: Profile) -> Any:
    if profile == Profile(Fallback.BLOCK, Fallback.BLOCK):
        return DefensivePolicy(retry=RETRY)
    if profile.on_token_failure is Fallback.ANONYMOUS:
        return AnonymousFallbackPolicy(
            retry=RETRY, on_activation_failure=profile.on_activation_failure
        )
    return _Policy(*profile)


ROW_CASES = [
    pytest.param(profile, row, id=f"{profile_id(profile)}:{row.source}-{row.trigger}-{row.dest}")
    for profile in ALL_PROFILES
    for row in rows_for(profile)
]


@dataclass
class Snapshot:
    attempts: int
    option: Any
    reason: FailureReason | None
    history_len: int

    @classmethod
    def of(cls, core: ActivationCore) -> Snapshot:
        return cls(core.attempts, core.option, core.reason, len(core.history))


def _begin_secured(before: Snapshot, core: ActivationCore, payload: dict[str, Any]) -> None:
    assert (core.attempts, core.option, core.reason) == (0, None, None)


def _begin_anonymous(before: Snapshot, core: ActivationCore, payload: dict[str, Any]) -> None:
    assert core.attempts == 0
    assert core.reason is None
    assert core.option is not None
    assert not core.option.is_secured


def _accept_token(before: Snapshot, core: ActivationCore, payload: dict[str, Any]) -> None:
    assert core.option == payload["option"]
    assert core.attempts == before.attempts + 1


def _record_failure(before: Snapshot, core: ActivationCore, payload: dict[str, Any]) -> None:
    assert core.reason is payload["reason"]


def _record_fallback_failure(
    before: Snapshot, core: ActivationCore, payload: dict[str, Any]
) -> None:
    expected = before.reason if before.reason is not None else payload["reason"]
    assert core.reason is expected


def _forget_visitor(before: Snapshot, core: ActivationCore, payload: dict[str, Any]) -> None:
    assert (core.attempts, core.option, core.reason, core.history) == (0, None, None, ())


def _mark_cancelled(before: Snapshot, core: ActivationCore, payload: dict[str, Any]) -> None:
    assert core.reason is FailureReason.CANCELLED


def _record_refresh(before: Snapshot, core: ActivationCore, payload: dict[str, Any]) -> None:
    assert core.option == payload["option"]
    assert core.token_fingerprint == payload["option"].fingerprint
    assert (core.attempts, core.reason) == (1, None)


def _record_refresh_failure(
    before: Snapshot, core: ActivationCore, payload: dict[str, Any]
) -> None:
    assert core.reason is payload["reason"]
    assert (core.option, core.token_fingerprint, core.attempts) == (None, None, 1)


EXPECTATIONS: dict[Action, Callable[[Snapshot, ActivationCore, dict[str, Any]], None]] = {
    Action.BEGIN_SECURED: _begin_secured,
    Action.BEGIN_ANONYMOUS: _begin_anonymous,
    Action.ACCEPT_TOKEN: _accept_token,
    Action.RECORD_FAILURE: _record_failure,
    Action.RECORD_FALLBACK_FAILURE: _record_fallback_failure,
    Action.FORGET_VISITOR: _forget_visitor,
    Action.MARK_CANCELLED: _mark_cancelled,
    Action.RECORD_REFRESH: _record_refresh,
    Action.RECORD_REFRESH_FAILURE: _record_refresh_failure,
}
"""What each of the table's actions must leave behind, checked after every row that runs it."""


def check_action(
    action: Action, before: Snapshot, core: ActivationCore, payload: dict[str, Any]
) -> None:
    EXPECTATIONS[action](before, core, payload)


def test_every_action_has_an_expectation() -> None:
    """Every action the table names has its expectation here, and the core implements it."""
    assert set(EXPECTATIONS) == set(Action)
    core = ActivationCore(DefensivePolicy())
    for action in Action:
        assert callable(getattr(core, action.value)), action
    used = {
        action for profile in ALL_PROFILES for row in rows_for(profile) for action in row.actions
    }
    assert used == set(Action)  # and every action is run (so checked) by some row


def check_work(row: Row, effect: Any, core: ActivationCore) -> None:
    work = {
        Work.FETCH_TOKEN: FetchToken,
        Work.ACTIVATE_SECURED: CallActivator,
        Work.BACK_OFF: BackOff,
        Work.ACTIVATE_ANONYMOUS: CallActivator,
    }
    from statemachine.protocol.table import ON_ENTER

    kind = ON_ENTER[row.dest]
    if kind is Work.FINISH:
        if row.trigger is Trigger.LOGOUT:
            assert effect is None
        else:
            assert isinstance(effect, Finish)
            assert effect.result.state is row.dest
            assert effect.result.attempts == core.attempts
    else:
        assert isinstance(effect, work[kind])
    if kind is Work.ACTIVATE_SECURED:
        assert effect.option.is_secured
        assert effect.option is core.option
    if kind is Work.ACTIVATE_ANONYMOUS:
        assert not effect.option.is_secured
        assert effect.on_success is Trigger.ANONYMOUS_SUCCEEDED


@pytest.mark.parametrize(("profile", "row"), ROW_CASES)
def test_transition(profile: Profile, row: Row, logs: list[dict[str, Any]]) -> None:
    core = ActivationCore(policy_for(profile))
    path = path_to_row(profile, row)
    for step, earlier in enumerate(path[:-1]):
        apply(core, earlier, step)
    assert core.state is row.source

    before = Snapshot.of(core)
    payload = witness(row, len(path))
    core.take_events()
    logs.clear()
    effect = apply(core, row, len(path))
    events = core.take_events()
    assert [(e.source, e.trigger, e.dest) for e in events] == [(row.source, row.trigger, row.dest)]
    Listeners(one_session=True).publish(events)  # what a driver does with them

    assert core.state is row.dest
    for action in row.actions:
        check_action(action, before, core, payload)
    if not row.actions:
        assert (core.attempts, core.option) == (before.attempts, before.option)
    check_work(row, effect, core)
    transitions = [e for e in logs if e["event"] == "activation.transition"]
    assert len(transitions) == 1
    event = transitions[0]
    assert event["session_id"] == core.session_id
    assert (event["source"], event["trigger"], event["dest"]) == (
        row.source.value,
        row.trigger.value,
        row.dest.value,
    )
    assert event["attempt"] == core.attempts
    expected_reason = (
        core.reason.name
        if core.reason
        and row.dest
        in {
            State.RETRYING,
            State.ACTIVATING_ANONYMOUS,
            State.ANONYMOUS,
            State.BLOCKED,
            State.UNAUTHENTICATED,
        }
        else None
    )
    assert event["reason"] == expected_reason
    if row.trigger is not Trigger.LOGOUT:
        assert core.history[-1].trigger is row.trigger
        assert core.history[-1].dest is row.dest


@pytest.mark.parametrize("profile", ALL_PROFILES, ids=profile_id)
def test_retry_guard_false_when_budget_spent(profile: Profile) -> None:
    """A retryable failure on the last allowed attempt takes the policy's edge, not retrying."""
    core = ActivationCore(policy_for(profile))
    core.begin(Trigger.ACTIVATE)
    for attempt in range(1, RETRY.max_retries + 2):
        core.fire(Trigger.TOKEN_RECEIVED, option=witness(rows_for(profile)[6])["option"])
        assert core.attempts == attempt
        core.fire(Trigger.ACTIVATION_FAILED, reason=FailureReason.SERVER_ERROR)
        if attempt <= RETRY.max_retries:
            assert core.state is State.RETRYING
            core.fire(Trigger.BACKOFF_ELAPSED)
    expected = (
        State.ACTIVATING_ANONYMOUS
        if profile.on_activation_failure is Fallback.ANONYMOUS
        else State.BLOCKED
    )
    assert core.state is expected
    assert core.attempts == 1 + RETRY.max_retries


def test_retry_guard_false_for_non_retryable_reason() -> None:
    core = ActivationCore(DefensivePolicy(retry=RETRY))
    core.begin(Trigger.ACTIVATE)
    core.fire(Trigger.TOKEN_RECEIVED, option=witness(TRANSITIONS[6])["option"])
    core.fire(Trigger.ACTIVATION_FAILED, reason=FailureReason.MALFORMED_TOKEN)
    assert core.state is State.BLOCKED
    assert core.attempts == 1


INVALID_CASES = [
    pytest.param(profile, state, trigger, id=f"{profile_id(profile)}:{state}-{trigger}")
    for profile in ALL_PROFILES
    for state in State
    for trigger in Trigger
    if not any(r.source == state and r.trigger == trigger for r in rows_for(profile))
    and (state, trigger) not in REJECTIONS
    and (state, trigger) not in REFRESHES
]


@pytest.mark.parametrize(("profile", "state", "trigger"), INVALID_CASES)
def test_invalid_trigger_is_refused_and_changes_nothing(
    profile: Profile, state: State, trigger: Trigger, logs: list[dict[str, Any]]
) -> None:
    core = ActivationCore(policy_for(profile))
    drive_to(core, state, profile)
    before = (Snapshot.of(core), core.history, core.flow)
    logs.clear()
    with pytest.raises(TransitionNotAllowed) as caught:
        if trigger in FLOW_STARTS:
            core.begin(trigger)
        else:
            core.fire(trigger, reason=FailureReason.SERVER_ERROR)
    assert caught.value.state is state
    assert caught.value.trigger is trigger
    assert f"'{trigger.value}' is not allowed in state '{state.value}'" in str(caught.value)
    assert core.state is state
    assert (Snapshot.of(core), core.history, core.flow) == before
    assert logs == []


def test_start_triggers_are_not_fired_directly_from_in_flight_states() -> None:
    """Rejections are answered by ``begin``; ``fire`` itself stays strict."""
    core = ActivationCore(DefensivePolicy())
    core.begin(Trigger.ACTIVATE)
    with pytest.raises(TransitionNotAllowed):
        core.fire(Trigger.ACTIVATE)


REJECTION_CASES = [
    pytest.param(profile, state, trigger, reason, id=f"{profile_id(profile)}:{state}-{trigger}")
    for profile in ALL_PROFILES
    for (state, trigger), reason in REJECTIONS.items()
]


@pytest.mark.parametrize(("profile", "state", "trigger", "reason"), REJECTION_CASES)
def test_rejected_call_changes_nothing(
    profile: Profile,
    state: State,
    trigger: Trigger,
    reason: FailureReason,
    logs: list[dict[str, Any]],
) -> None:
    core = ActivationCore(policy_for(profile))
    drive_to(core, state, profile)
    before = (Snapshot.of(core), core.history, core.flow)
    logs.clear()
    effect = core.begin(trigger)
    assert isinstance(effect, Finish)
    assert effect.result.status == FAILURE
    assert effect.result.reason is reason
    assert effect.result.state is state
    assert effect.result.attempts == 0
    assert core.state is state
    assert (Snapshot.of(core), core.history, core.flow) == before
    assert [e["event"] for e in logs] == ["activation.rejected"]
    assert logs[0]["reason"] == reason.name


def test_rejection_reasons_use_the_platform_wording() -> None:
    assert FailureReason.LOGIN_ONGOING.message == "A login is already ongoing"
    assert FailureReason.ALREADY_ACTIVATED.message == "Can't activate twice, please logout first"


@pytest.mark.parametrize("profile", ALL_PROFILES, ids=profile_id)
def test_reverify_while_authenticated_refreshes_without_moving(
    profile: Profile, logs: list[dict[str, Any]]
) -> None:
    """``REFRESHES``: no row fires until the refresh completes; the visitor stays put."""
    core = ActivationCore(policy_for(profile))
    drive_to(core, State.AUTHENTICATED, profile)
    before = (Snapshot.of(core), core.history)
    logs.clear()
    effect = core.begin(Trigger.REVERIFY)
    assert isinstance(effect, FetchToken)
    assert effect.refresh
    assert core.state is State.AUTHENTICATED
    assert (Snapshot.of(core), core.history) == before
    assert logs == []
    again = core.begin(Trigger.REVERIFY)  # one refresh at a time
    assert isinstance(again, Finish)
    assert again.result.reason is FailureReason.LOGIN_ONGOING

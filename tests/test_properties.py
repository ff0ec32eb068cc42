"""Invariants under random event sequences and random platform behaviour.

- never authenticated without a successful secured activation;
- never more than 1 + max_retries secured attempts per flow;
- the defensive policy never falls back;
- every flow ends, in a resting state, with the callback called exactly once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from policies import AnonymousFallbackPolicy, DefensivePolicy, RetryPolicy
from policies.retry import RETRYABLE
from statemachine import (
    ActivationError,
    ActivationResult,
    ActivationSession,
    AsyncActivationSession,
    AuthenticationOption,
    FailureReason,
    State,
    TransitionNotAllowed,
    Trigger,
)
from statemachine.engine._core import ActivationCore
from statemachine.protocol.states import RESTING

reasons = st.sampled_from(list(FailureReason))
retry_policies = st.builds(
    RetryPolicy,
    max_retries=st.integers(0, 4),
    base_delay=st.just(0.0),
    max_delay=st.just(0.0),
    jitter=st.just(0.0),
    retry_on=st.frozensets(st.sampled_from(sorted(RETRYABLE, key=lambda r: r.name))),
)
policies = st.one_of(
    st.builds(
        DefensivePolicy, retry=retry_policies, token_timeout=st.none(), activation_timeout=st.none()
    ),
    st.builds(
        AnonymousFallbackPolicy,
        retry=retry_policies,
        token_timeout=st.none(),
        activation_timeout=st.none(),
        on_activation_failure=st.sampled_from(["anonymous", "block"]),
    ),
)

DRIVER_EVENTS = [
    Trigger.TOKEN_RECEIVED,
    Trigger.TOKEN_FAILED,
    Trigger.ACTIVATION_SUCCEEDED,
    Trigger.ACTIVATION_FAILED,
    Trigger.BACKOFF_ELAPSED,
    Trigger.ANONYMOUS_SUCCEEDED,
    Trigger.ANONYMOUS_FAILED,
    Trigger.LOGOUT,
    Trigger.CANCEL,
]


class CoreMachine(RuleBasedStateMachine):
    """Any event, valid or not, in any order: the core either moves by the table or refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.core: ActivationCore | None = None
        self.last_secured_success = False

    @precondition(lambda self: self.core is None)
    @rule(policy=policies)
    def create(self, policy: Any) -> None:
        self.core = ActivationCore(policy)

    @precondition(lambda self: self.core is not None)
    @rule(
        trigger=st.sampled_from([Trigger.ACTIVATE, Trigger.ACTIVATE_ANONYMOUSLY, Trigger.REVERIFY])
    )
    def host_call(self, trigger: Trigger) -> None:
        assert self.core is not None
        before = self.core.state
        try:
            self.core.begin(trigger)
        except TransitionNotAllowed:
            assert self.core.state is before

    @precondition(lambda self: self.core is not None)
    @rule(
        trigger=st.sampled_from(DRIVER_EVENTS),
        reason=reasons,
        token=st.text(min_size=1, max_size=8),
    )
    def driver_event(self, trigger: Trigger, reason: FailureReason, token: str) -> None:
        assert self.core is not None
        before = self.core.state
        try:
            self.core.fire(trigger, option=AuthenticationOption.secured(token), reason=reason)
        except TransitionNotAllowed:
            assert self.core.state is before
            return
        if self.core.state is State.AUTHENTICATED and before is not State.AUTHENTICATED:
            assert trigger is Trigger.ACTIVATION_SUCCEEDED
            assert before is State.ACTIVATING
            assert self.core.option is not None
            assert self.core.option.is_secured

    @invariant()
    def attempts_bounded(self) -> None:
        if self.core is not None:
            assert 0 <= self.core.attempts <= 1 + self.core.policy.retry.max_retries

    @invariant()
    def defensive_never_falls_back(self) -> None:
        core = self.core
        if core is not None and core.policy.name == "defensive":
            for entry in core.history:
                if entry.dest is State.ACTIVATING_ANONYMOUS:
                    assert entry.trigger is Trigger.ACTIVATE_ANONYMOUSLY

    @invariant()
    def authenticated_only_via_secured_success(self) -> None:
        core = self.core
        if core is not None and core.state is State.AUTHENTICATED and core.history:
            into = [e for e in core.history if e.dest is State.AUTHENTICATED][-1]
            assert into.trigger is Trigger.ACTIVATION_SUCCEEDED
            assert into.source is State.ACTIVATING


TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)

provider_outcomes = st.lists(
    st.one_of(st.just("token"), st.none(), st.just(RuntimeError("down"))), min_size=1, max_size=6
)
activator_outcomes = st.lists(
    st.one_of(st.none(), reasons, st.just(ConnectionError("x"))), min_size=1, max_size=8
)


class Scripted:
    def __init__(self, provider: list[Any], secured: list[Any], anonymous: list[Any]) -> None:
        self.provider, self.secured, self.anonymous = provider, secured, anonymous
        self.secured_calls: list[bool] = []  # success of each secured call
        self.anonymous_calls = 0
        self.n = 0

    def provide(self) -> Any:
        value = self.provider[min(self.n, len(self.provider) - 1)]
        self.n += 1
        if isinstance(value, BaseException):
            raise value
        return value

    def activate(self, option: AuthenticationOption) -> None:
        if option.is_secured:
            outcome = self.secured[min(len(self.secured_calls), len(self.secured) - 1)]
            self.secured_calls.append(outcome is None)
        else:
            outcome = self.anonymous[min(self.anonymous_calls, len(self.anonymous) - 1)]
            self.anonymous_calls += 1
        if isinstance(outcome, FailureReason):
            raise ActivationError(outcome)
        if isinstance(outcome, BaseException):
            raise outcome


def check_flow(
    policy: Any,
    script: Scripted,
    results: list[ActivationResult],
    result: ActivationResult,
    state: State,
) -> None:
    assert results == [result]  # callback exactly once
    assert state in RESTING
    assert result.state is state
    assert result.attempts == len(script.secured_calls) <= 1 + policy.retry.max_retries
    if state is State.AUTHENTICATED:
        assert script.secured_calls
        assert script.secured_calls[-1]
    else:
        assert not any(script.secured_calls)
    if policy.name == "defensive":
        assert script.anonymous_calls == 0
        assert state is not State.ANONYMOUS


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=policies, provider=provider_outcomes, secured=activator_outcomes, anon=activator_outcomes
)
def test_blocking_flows_always_end_by_the_rules(
    policy: Any, provider: list[Any], secured: list[Any], anon: list[Any]
) -> None:
    script = Scripted(provider, secured, anon)
    session = ActivationSession(script.provide, script, policy)
    results: list[ActivationResult] = []
    result = session.activate(results.append)
    check_flow(policy, script, results, result, session.state)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=policies, provider=provider_outcomes, secured=activator_outcomes, anon=activator_outcomes
)
def test_async_flows_always_end_by_the_rules(
    policy: Any, provider: list[Any], secured: list[Any], anon: list[Any]
) -> None:
    script = Scripted(provider, secured, anon)

    async def activate(option: AuthenticationOption) -> None:
        script.activate(option)

    class AsyncScripted:
        pass

    activator = AsyncScripted()
    activator.activate = activate  # type: ignore[attr-defined]

    async def provide() -> Any:
        return script.provide()

    async def go() -> tuple[ActivationResult, State, list[ActivationResult]]:
        session = AsyncActivationSession(provide, activator, policy)  # type: ignore[arg-type]
        results: list[ActivationResult] = []
        result = await session.activate(results.append)
        return result, session.state, results

    result, state, results = asyncio.run(go())
    check_flow(policy, script, results, result, state)

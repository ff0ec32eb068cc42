"""Policies: defaults, validation naming the field, TOML and mapping loading, host-made policies."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from policies import (
    DEFAULT_RETRY_ON,
    AnonymousFallbackPolicy,
    DefensivePolicy,
    Fallback,
    PolicyError,
    RetryPolicy,
    load_policy,
)
from statemachine import FailureReason
from statemachine.protocol.policy import ActivationPolicy

EXAMPLE = """
fallback = "anonymous"
on_activation_failure = "block"
token_timeout = 5.0
activation_timeout = 10.0
[retry]
max_retries = 3
base_delay = 0.25
multiplier = 2.0
max_delay = 4.0
jitter = 0.1
retry_on = ["SERVER_ERROR", "ACTIVATION_TIMEOUT", "EXPIRED_TOKEN", "UNKNOWN"]
"""


def test_defaults_follow_the_platform() -> None:
    policy = DefensivePolicy()
    assert policy.retry.max_retries == 3
    assert policy.retry.retry_on == DEFAULT_RETRY_ON
    assert policy.on_token_failure is Fallback.BLOCK
    assert policy.on_activation_failure is Fallback.BLOCK
    anon = AnonymousFallbackPolicy()
    assert anon.on_token_failure is Fallback.ANONYMOUS
    assert anon.on_activation_failure is Fallback.ANONYMOUS
    assert (
        AnonymousFallbackPolicy(on_activation_failure="block").on_activation_failure
        is Fallback.BLOCK
    )
    assert isinstance(policy, ActivationPolicy)
    assert isinstance(anon, ActivationPolicy)


def test_policies_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DefensivePolicy().token_timeout = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryPolicy().max_retries = 9  # type: ignore[misc]


def test_load_from_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(EXAMPLE)
    policy = load_policy(path)
    assert isinstance(policy, AnonymousFallbackPolicy)
    assert policy.on_activation_failure is Fallback.BLOCK
    assert policy.retry == RetryPolicy(
        max_retries=3, base_delay=0.25, multiplier=2.0, max_delay=4.0, jitter=0.1
    )
    assert load_policy(str(path)) == policy


def test_load_from_mapping_and_default_fallback() -> None:
    assert load_policy({}) == DefensivePolicy()
    assert load_policy({"fallback": "defensive", "token_timeout": 2}).token_timeout == 2.0
    policy = load_policy({"fallback": "anonymous", "retry": {"retry_on": "all", "max_retries": 0}})
    assert isinstance(policy, AnonymousFallbackPolicy)
    assert FailureReason.MALFORMED_TOKEN in policy.retry.retry_on
    assert FailureReason.TOKEN_UNAVAILABLE not in policy.retry.retry_on


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"fallbak": "anonymous"}, "fallbak"),
        ({"fallback": "optimistic"}, "fallback"),
        ({"fallback": "defensive", "on_activation_failure": "block"}, "on_activation_failure"),
        ({"fallback": "anonymous", "on_activation_failure": "maybe"}, "on_activation_failure"),
        ({"token_timeout": 0}, "token_timeout"),
        ({"token_timeout": -1}, "token_timeout"),
        ({"token_timeout": "5"}, "token_timeout"),
        ({"activation_timeout": float("nan")}, "activation_timeout"),
        ({"activation_timeout": 1e9}, "activation_timeout"),
        ({"retry": 3}, "retry"),
        ({"retry": {"max_retrys": 3}}, "retry.max_retrys"),
        ({"retry": {"max_retries": -1}}, "retry.max_retries"),
        ({"retry": {"max_retries": 11}}, "retry.max_retries"),
        ({"retry": {"max_retries": 2.5}}, "retry.max_retries"),
        ({"retry": {"max_retries": True}}, "retry.max_retries"),
        ({"retry": {"base_delay": -0.1}}, "retry.base_delay"),
        ({"retry": {"multiplier": 0.5}}, "retry.multiplier"),
        ({"retry": {"max_delay": 0.1, "base_delay": 1.0}}, "retry.max_delay"),
        ({"retry": {"jitter": 1.5}}, "retry.jitter"),
        ({"retry": {"retry_on": ["SERVER_EROR"]}}, "retry.retry_on"),
        ({"retry": {"retry_on": ["TOKEN_UNAVAILABLE"]}}, "retry.retry_on"),
        ({"retry": {"retry_on": "SERVER_ERROR"}}, "retry.retry_on"),
    ],
)
def test_bad_values_and_unknown_keys_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(data)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_file_errors_are_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("fallback = = 'x'")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(bad)


def test_delay_grows_caps_and_jitters() -> None:
    retry = RetryPolicy(base_delay=0.5, multiplier=2.0, max_delay=3.0, jitter=0.0)
    assert [retry.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert retry.delay(10_000) == 3.0  # no overflow
    jittery = RetryPolicy(base_delay=1.0, max_delay=1.0, jitter=0.2)
    samples = {jittery.delay(1) for _ in range(200)}
    assert all(0.8 <= d <= 1.2 for d in samples)
    assert len(samples) > 1
    assert jittery.longest_delay == pytest.approx(1.2)
    assert RetryPolicy(base_delay=0, max_delay=0).delay(3) == 0.0


def test_host_policy_object_is_accepted() -> None:
    from statemachine import ActivationSession, State

    @dataclasses.dataclass(frozen=True)
    class Mine:
        name: str = "mine"
        retry: RetryPolicy = dataclasses.field(default_factory=lambda: RetryPolicy(max_retries=0))
        token_timeout: float | None = None
        activation_timeout: float | None = None
        on_token_failure: str = "anonymous"
        on_activation_failure: str = "block"

    class Ok:
        def activate(self, option: Any) -> None:
            return None

    session = ActivationSession(lambda: None, Ok(), Mine())  # type: ignore[arg-type]
    assert session.activate().state is State.ANONYMOUS
    with pytest.raises(ValueError, match=r"policy\.on_token_failure must be"):
        ActivationSession(lambda: None, Ok(), Mine(on_token_failure="maybe"))  # type: ignore[arg-type]


def test_a_retry_on_iterable_that_raises_is_a_policy_error() -> None:
    import itertools

    from policies import PolicyError, RetryPolicy

    def breaks() -> Any:
        yield "SERVER_ERROR"
        raise ZeroDivisionError

    with pytest.raises(PolicyError, match="retry_on"):
        RetryPolicy(retry_on=breaks())
    with pytest.raises(PolicyError, match="retry_on"):
        RetryPolicy(retry_on=itertools.repeat("SERVER_ERROR"))  # never ends: bounded


def test_policy_limits_and_defaults_have_one_home() -> None:
    """``policies`` builds on the engine's limits; neither keeps its own copy."""
    from policies import fallback, retry
    from statemachine.protocol import policy

    assert fallback.MAX_TIMEOUT == policy.MAX_SECONDS
    assert fallback.MAX_SESSION_LIFETIME == policy.MAX_LIFETIME
    assert retry.MAX_RETRIES_CAP == policy.MAX_RETRIES
    assert DefensivePolicy().session_lifetime == policy.DEFAULT_SESSION_LIFETIME
    assert DefensivePolicy().token_timeout == policy.DEFAULT_TOKEN_TIMEOUT
    assert DefensivePolicy().activation_timeout == policy.DEFAULT_ACTIVATION_TIMEOUT
    assert policy.default_policy() == DefensivePolicy()


def test_a_lease_covers_the_longest_jittered_backoff() -> None:
    from statemachine.tracking._rules import LEASE_GRACE, lease_seconds

    jittery = DefensivePolicy(retry=RetryPolicy(max_delay=2.0, jitter=0.5))
    assert lease_seconds(jittery) == pytest.approx(5.0 + 10.0 + 3.0 + LEASE_GRACE)

    class Fixed:  # a strategy that states no bound: its largest delay counts
        max_retries = 2

        def should_retry(self, reason: object) -> bool:
            return True

        def delay(self, retry: int) -> float:
            return 1.5 * retry

    from statemachine.protocol.policy import longest_backoff

    assert longest_backoff(Fixed()) == 3.0

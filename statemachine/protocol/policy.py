"""How the engine sees a policy: a protocol, its limits, its validation, and the default.

The one home of every rule about a policy: ``policies`` (the configuration
objects) imports its limits and defaults from here, and every driver
(sessions, trackers) checks a policy with ``checked_policy``. The engine sees
a policy only through the protocol, so ``policies`` depends on the engine and
not the reverse (the default policy is imported from it lazily, on first use).
"""

from __future__ import annotations

import functools
import math
from enum import StrEnum
from typing import Any, Final, Literal, NamedTuple, Protocol, cast, runtime_checkable

from statemachine.protocol.reasons import FailureReason


class Fallback(StrEnum):
    """What a policy does once a secured flow has failed for good."""

    ANONYMOUS = "anonymous"
    BLOCK = "block"


FallbackChoice = Fallback | Literal["anonymous", "block"]
"""A ``Fallback`` or its string value, so configuration can say ``"block"``."""


@runtime_checkable
class RetryStrategy(Protocol):
    @property
    def max_retries(self) -> int: ...

    def should_retry(self, reason: FailureReason) -> bool:
        """Whether a failed activation with ``reason`` deserves another attempt."""
        ...

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        ...


@runtime_checkable
class ActivationPolicy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def retry(self) -> RetryStrategy: ...

    @property
    def token_timeout(self) -> float | None: ...

    @property
    def activation_timeout(self) -> float | None: ...

    @property
    def on_token_failure(self) -> FallbackChoice: ...

    @property
    def on_activation_failure(self) -> FallbackChoice: ...


# -- limits and defaults (``policies`` builds its configuration objects from these) --------
DEFAULT_TOKEN_TIMEOUT: Final = 5.0
DEFAULT_ACTIVATION_TIMEOUT: Final = 10.0
DEFAULT_SESSION_LIFETIME: Final = 3600.0
"""The platform session's lifetime when a policy does not say (an optional attribute);
banks choose about 7 minutes (420)."""
MAX_SECONDS: Final = 3600.0
"""The longest timeout or retry delay a policy may ask for: an hour."""
MAX_LIFETIME: Final = 7 * 86400.0
"""The longest platform session a policy may declare: a week."""
MAX_RETRIES: Final = 10
"""The largest retry budget: the tag's own habit is 3."""
DEFAULT_BUDGET_TOKENS: Final = 12
DEFAULT_BUDGET_SECONDS: Final = 60.0
"""A tracked visitor's minting budget when a policy does not say: 12 tokens per 60 s."""
MAX_BUDGET_TOKENS: Final = 1_000
"""Each counted mint is a time in the visitor's record: the record must stay small."""
MAX_BUDGET_SECONDS: Final = 86_400.0


def session_lifetime(policy: ActivationPolicy) -> float:
    """Seconds a platform session lasts before the visitor's identity must be verified again."""
    return float(getattr(policy, "session_lifetime", DEFAULT_SESSION_LIFETIME))


def mint_budget(policy: ActivationPolicy) -> tuple[int, float] | None:
    """``(tokens, seconds)``: a tracked visitor's minting budget, or ``None`` for no budget.

    An optional attribute, ``mint_budget`` (``None``, or an object with
    ``tokens`` and ``seconds``, as ``policies.MintBudget``); a policy without
    one gets the default, 12 tokens per 60 s.
    """
    if not hasattr(policy, "mint_budget"):
        return DEFAULT_BUDGET_TOKENS, DEFAULT_BUDGET_SECONDS
    budget: Any = policy.mint_budget
    if budget is None:
        return None
    return int(budget.tokens), float(budget.seconds)


def longest_backoff(retry: RetryStrategy) -> float:
    """The longest wait between two attempts, for worst-case planning (a tracker's lease).

    A strategy may state its bound as ``longest_delay`` (``RetryPolicy`` does:
    its cap with jitter); one that does not counts its largest delay over its
    budget.
    """
    stated = getattr(retry, "longest_delay", None)
    if isinstance(stated, int | float) and not isinstance(stated, bool):
        return float(stated)
    return max((float(retry.delay(n)) for n in range(1, retry.max_retries + 1)), default=0.0)


# -- validation ----------------------------------------------------------------------
def default_policy() -> ActivationPolicy:
    """``DefensivePolicy()``: what a session or tracker given no policy follows."""
    # Imported here, not at module level: ``policies`` depends on the engine.
    from policies import DefensivePolicy

    return DefensivePolicy()


def checked_policy(policy: object) -> ActivationPolicy:
    """``policy`` (the default when None), once it is known to be one the engine can follow.

    Raises ``TypeError`` for an object that does not provide the protocol and
    ``ValueError`` for a value that would otherwise fail mid-flow (inf, NaN,
    negative, absurd). A policy that is hashable (they are frozen) is checked
    once: a runtime protocol check costs more than the rest of a session's
    creation.
    """
    if policy is None:
        return default_policy()
    try:
        hash(policy)
    except TypeError:
        _check_policy(policy)
    else:
        _check_hashable_policy(policy)
    return cast(ActivationPolicy, policy)  # checked above (isinstance again would cost as much)


def check_seconds(name: str, value: object, *, optional: bool, high: float = MAX_SECONDS) -> None:
    """Refuse at construction what would otherwise fail mid-flow: inf, NaN, negative, absurd."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    low_ok = value >= 0 if name.startswith("policy.retry") else value > 0
    if not math.isfinite(value) or not low_ok or value > high:
        raise ValueError(f"{name} must be a finite number of seconds up to {high:g}, got {value!r}")


def _check_policy(policy: object) -> None:
    if not isinstance(policy, ActivationPolicy):
        raise TypeError(
            "policy must provide name, retry, token_timeout, activation_timeout, "
            f"on_token_failure and on_activation_failure; got {type(policy).__name__}"
        )
    for decision in ("on_token_failure", "on_activation_failure"):
        try:
            Fallback(getattr(policy, decision))
        except ValueError:
            raise ValueError(
                f"policy.{decision} must be 'anonymous' or 'block', "
                f"got {getattr(policy, decision)!r}"
            ) from None
    for name in ("token_timeout", "activation_timeout"):
        check_seconds(f"policy.{name}", getattr(policy, name), optional=True)
    lifetime = getattr(policy, "session_lifetime", None)
    if lifetime is not None:
        check_seconds("policy.session_lifetime", lifetime, optional=False, high=MAX_LIFETIME)
    retry = policy.retry
    if not isinstance(retry, RetryStrategy):
        raise TypeError("policy.retry must provide max_retries, should_retry() and delay()")
    budget = retry.max_retries
    if type(budget) is not int or not 0 <= budget <= MAX_RETRIES:
        raise ValueError(f"policy.retry.max_retries must be an integer from 0 to {MAX_RETRIES}")
    for attempt in range(1, budget + 1):
        check_seconds(f"policy.retry.delay({attempt})", retry.delay(attempt), optional=False)
    minting = getattr(policy, "mint_budget", None)
    if minting is not None:
        tokens = getattr(minting, "tokens", None)
        if type(tokens) is not int or not 1 <= tokens <= MAX_BUDGET_TOKENS:
            raise ValueError(
                f"policy.mint_budget.tokens must be an integer from 1 to {MAX_BUDGET_TOKENS}"
            )
        seconds = getattr(minting, "seconds", None)
        check_seconds(
            "policy.mint_budget.seconds", seconds, optional=False, high=MAX_BUDGET_SECONDS
        )


_check_hashable_policy = functools.lru_cache(maxsize=64)(_check_policy)
"""Policies are immutable and shared, so each is checked once (errors are not cached)."""


class Profile(NamedTuple):
    """The two decisions that change the machine's shape (which edges exist).

    Everything else a policy says (retry budget, delays, timeouts) is read at
    run time by guards and drivers, so sessions with different retry settings
    still share one machine per profile.
    """

    on_token_failure: Fallback
    on_activation_failure: Fallback

    @classmethod
    def of(cls, policy: ActivationPolicy) -> Profile:
        return cls(Fallback(policy.on_token_failure), Fallback(policy.on_activation_failure))


DEFENSIVE_PROFILE = Profile(Fallback.BLOCK, Fallback.BLOCK)
ANONYMOUS_PROFILE = Profile(Fallback.ANONYMOUS, Fallback.ANONYMOUS)

"""How the engine sees a policy: a protocol, so ``policies`` depends on us, not the reverse."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from statemachine.reasons import FailureReason


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


DEFAULT_SESSION_LIFETIME = 3600.0
"""The platform session's lifetime when a policy does not say (an optional attribute)."""


def session_lifetime(policy: ActivationPolicy) -> float:
    """Seconds a platform session lasts before the visitor's identity must be verified again."""
    return float(getattr(policy, "session_lifetime", DEFAULT_SESSION_LIFETIME))


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

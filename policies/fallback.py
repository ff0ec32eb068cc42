"""The two fallback policies a host chooses between (docs/design.md §1).

Both are frozen configuration objects satisfying
``statemachine.protocol.policy.ActivationPolicy``; a host may pass any other object
that does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Final

from policies.budget import DEFAULT_MINT_BUDGET, MintBudget, check_budget
from policies.errors import PolicyError
from policies.retry import RetryPolicy, _number
from statemachine.protocol.policy import (
    DEFAULT_ACTIVATION_TIMEOUT,
    DEFAULT_SESSION_LIFETIME,
    DEFAULT_TOKEN_TIMEOUT,
    MAX_LIFETIME,
    MAX_SECONDS,
    Fallback,
    FallbackChoice,
)

MAX_TIMEOUT: Final = MAX_SECONDS
MAX_SESSION_LIFETIME: Final = MAX_LIFETIME


def _timeout(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    number = _number(name, value, low=0.0, high=MAX_TIMEOUT)
    if number == 0.0:
        raise PolicyError(name, "must be more than 0 (or None for no timeout)")
    return number


def _check_common(policy: DefensivePolicy | AnonymousFallbackPolicy) -> None:
    if not isinstance(policy.retry, RetryPolicy):
        raise PolicyError("retry", f"must be a RetryPolicy, got {type(policy.retry).__name__}")
    object.__setattr__(policy, "token_timeout", _timeout("token_timeout", policy.token_timeout))
    object.__setattr__(
        policy, "activation_timeout", _timeout("activation_timeout", policy.activation_timeout)
    )
    lifetime = _number(
        "session_lifetime", policy.session_lifetime, low=1.0, high=MAX_SESSION_LIFETIME
    )
    object.__setattr__(policy, "session_lifetime", lifetime)
    object.__setattr__(policy, "mint_budget", check_budget(policy.mint_budget))


@dataclass(frozen=True, slots=True)
class DefensivePolicy:
    """Never activate anything but a verified identity: block on any final failure.

    The platform recommends this for a fully authenticated experience.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    token_timeout: float | None = DEFAULT_TOKEN_TIMEOUT
    activation_timeout: float | None = DEFAULT_ACTIVATION_TIMEOUT
    session_lifetime: float = DEFAULT_SESSION_LIFETIME
    mint_budget: MintBudget | None = DEFAULT_MINT_BUDGET

    name: ClassVar[str] = "defensive"

    def __post_init__(self) -> None:
        _check_common(self)

    @property
    def on_token_failure(self) -> Fallback:
        return Fallback.BLOCK

    @property
    def on_activation_failure(self) -> Fallback:
        return Fallback.BLOCK


@dataclass(frozen=True, slots=True)
class AnonymousFallbackPolicy:
    """Fall back to an anonymous activation rather than leave the visitor without chat.

    ``on_activation_failure="block"`` follows the platform's advice: fall back
    only when the backend could not sign the visitor in, not after the
    platform refused their token.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    token_timeout: float | None = DEFAULT_TOKEN_TIMEOUT
    activation_timeout: float | None = DEFAULT_ACTIVATION_TIMEOUT
    on_activation_failure: FallbackChoice = Fallback.ANONYMOUS
    session_lifetime: float = DEFAULT_SESSION_LIFETIME
    mint_budget: MintBudget | None = DEFAULT_MINT_BUDGET

    name: ClassVar[str] = "anonymous"

    def __post_init__(self) -> None:
        _check_common(self)
        value = self.on_activation_failure
        try:
            fallback = Fallback(value)
        except ValueError:
            raise PolicyError(
                "on_activation_failure", f'must be "anonymous" or "block", got {value!r}'
            ) from None
        object.__setattr__(self, "on_activation_failure", fallback)

    @property
    def on_token_failure(self) -> Fallback:
        return Fallback.ANONYMOUS

"""Retry policy: which failures get another attempt, and how long to wait first."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from policies.errors import PolicyError
from statemachine.protocol.policy import MAX_RETRIES, MAX_SECONDS
from statemachine.protocol.reasons import FailureReason

DEFAULT_RETRY_ON: Final = frozenset(
    {
        FailureReason.SERVER_ERROR,
        FailureReason.ACTIVATION_TIMEOUT,
        FailureReason.EXPIRED_TOKEN,
        # The tag retries without saying why: an inferred retry is recorded as UNKNOWN.
        FailureReason.UNKNOWN,
    }
)

NEVER_RETRIED: Final = frozenset(
    {
        # A provider failure goes straight to the policy (docs/design.md §2); the rest are
        # verdicts about the session itself, which another attempt cannot change.
        FailureReason.TOKEN_UNAVAILABLE,
        FailureReason.LOGIN_ONGOING,
        FailureReason.ALREADY_ACTIVATED,
        FailureReason.CANCELLED,
        FailureReason.WORKERS_EXHAUSTED,
        FailureReason.MINT_BUDGET_SPENT,
    }
)

RETRYABLE: Final = frozenset(FailureReason) - NEVER_RETRIED
"""Every reason ``retry_on`` may name; retrying all of them is the tag's own habit."""

MAX_RETRIES_CAP: Final = MAX_RETRIES


def _number(name: str, value: object, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(name, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise PolicyError(name, "is far too large") from None
    if not math.isfinite(number) or not low <= number <= high:
        upper = "" if high == math.inf else f" and at most {high:g}"
        raise PolicyError(name, f"must be at least {low:g}{upper}, got {value!r}")
    return number


_MAX_LISTED: Final = 64
"""More names than ``FailureReason`` has members, many times over: anything longer is a mistake."""


def parse_reasons(name: str, values: object) -> frozenset[FailureReason]:
    if isinstance(values, str) and values == "all":
        return RETRYABLE
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise PolicyError(name, 'must be a list of FailureReason names, or "all"')
    try:  # a host's iterable may raise anything while iterated, or never end
        items = list(itertools.islice(values, _MAX_LISTED + 1))
    except Exception as error:  # noqa: BLE001 - one typed error naming the field
        raise PolicyError(name, f"could not be read ({type(error).__name__})") from None
    if len(items) > _MAX_LISTED:
        raise PolicyError(name, f"lists more than {_MAX_LISTED} reasons")
    reasons: set[FailureReason] = set()
    for item in items:
        if isinstance(item, FailureReason):
            reason = item
        elif isinstance(item, str) and item.strip().upper() in FailureReason.__members__:
            reason = FailureReason[item.strip().upper()]
        else:
            valid = ", ".join(sorted(r.name for r in RETRYABLE))
            raise PolicyError(name, f"unknown reason {item!r} (valid: {valid})")
        if reason in NEVER_RETRIED:
            raise PolicyError(name, f"{reason.name} is never retried")
        reasons.add(reason)
    return frozenset(reasons)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries inside one ``activate`` call: at most ``1 + max_retries`` attempts.

    Delay before retry *n* is ``min(max_delay, base_delay * multiplier**(n-1))``,
    spread by ``±jitter`` (a fraction) so that many visitors hit by the same
    outage do not come back in lockstep.
    """

    max_retries: int = 3
    base_delay: float = 0.25
    multiplier: float = 2.0
    max_delay: float = 4.0
    jitter: float = 0.1
    retry_on: frozenset[FailureReason] = field(default=DEFAULT_RETRY_ON)

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise PolicyError("retry.max_retries", "must be a whole number")
        if not 0 <= self.max_retries <= MAX_RETRIES_CAP:
            shown = str(self.max_retries) if abs(self.max_retries) < 10**12 else "a huge number"
            raise PolicyError(
                "retry.max_retries", f"must be between 0 and {MAX_RETRIES_CAP}, got {shown}"
            )
        base = _number("retry.base_delay", self.base_delay, low=0.0, high=MAX_SECONDS)
        multiplier = _number("retry.multiplier", self.multiplier, low=1.0, high=100.0)
        top = _number("retry.max_delay", self.max_delay, low=0.0, high=MAX_SECONDS)
        jitter = _number("retry.jitter", self.jitter, low=0.0, high=1.0)
        if top < base:
            raise PolicyError("retry.max_delay", f"must be at least base_delay ({base:g})")
        object.__setattr__(self, "base_delay", base)
        object.__setattr__(self, "multiplier", multiplier)
        object.__setattr__(self, "max_delay", top)
        object.__setattr__(self, "jitter", jitter)
        object.__setattr__(self, "retry_on", parse_reasons("retry.retry_on", self.retry_on))

    def should_retry(self, reason: FailureReason) -> bool:
        return reason in self.retry_on

    def delay(self, retry: int) -> float:
        exponent = max(0, retry - 1)
        # Compare in log space so a huge exponent cannot overflow.
        if self.base_delay == 0.0:
            raw = 0.0
        elif exponent * math.log(self.multiplier) > math.log(self.max_delay / self.base_delay or 1):
            raw = self.max_delay
        else:
            raw = min(self.max_delay, self.base_delay * self.multiplier**exponent)
        if self.jitter:
            raw *= 1.0 + random.uniform(-self.jitter, self.jitter)  # noqa: S311 - not crypto
        return max(0.0, raw)

    @property
    def longest_delay(self) -> float:
        """The largest delay ``delay`` can return: an upper bound for worst-case planning."""
        return self.max_delay * (1.0 + self.jitter)

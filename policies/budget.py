"""The minting budget: how many tokens one visitor may be handed in a sliding window.

A token is a credential the host signs on demand; without a bound, one
visitor (or one script holding a visitor cookie) can make the backend mint
hundreds a second. The tracker keeps each visitor's recent mints in the
visitor's own record, so the bound holds across workers sharing a store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from policies.errors import PolicyError
from policies.retry import _number
from statemachine.protocol.policy import (
    DEFAULT_BUDGET_SECONDS,
    DEFAULT_BUDGET_TOKENS,
    MAX_BUDGET_SECONDS,
    MAX_BUDGET_TOKENS,
)


@dataclass(frozen=True, slots=True)
class MintBudget:
    """At most ``tokens`` tokens per visitor in any ``seconds``-long span (a sliding window).

    A sliding window, not fixed windows: no boundary lets a visitor take a
    window's worth at its end and another at the next one's start. Every
    token the provider is asked for counts: a first attempt, the tag's
    retries and refreshes.
    """

    tokens: int = DEFAULT_BUDGET_TOKENS
    seconds: float = DEFAULT_BUDGET_SECONDS

    def __post_init__(self) -> None:
        tokens = self.tokens
        if type(tokens) is not int or not 1 <= tokens <= MAX_BUDGET_TOKENS:
            raise PolicyError(
                "mint_budget.tokens",
                f"must be an integer from 1 to {MAX_BUDGET_TOKENS}, got {tokens!r}",
            )
        seconds = _number("mint_budget.seconds", self.seconds, low=0.0, high=MAX_BUDGET_SECONDS)
        if seconds == 0.0:
            raise PolicyError("mint_budget.seconds", "must be more than 0")
        object.__setattr__(self, "seconds", seconds)


DEFAULT_MINT_BUDGET: Final = MintBudget()


def check_budget(value: object) -> MintBudget | None:
    """A policy's ``mint_budget``: a ``MintBudget``, or ``None`` for no budget."""
    if value is None or isinstance(value, MintBudget):
        return value
    raise PolicyError("mint_budget", f"must be a MintBudget or None, got {type(value).__name__}")


def read_budget(value: Any) -> MintBudget | None:
    """The TOML form: a ``[mint_budget]`` table (``tokens``, ``seconds``), or ``false`` for none."""
    if value is False:
        return None
    if not isinstance(value, Mapping):
        raise PolicyError(
            "mint_budget", "must be a table (tokens, seconds), or false for no budget"
        )
    for key in value:
        if key not in ("tokens", "seconds"):
            raise PolicyError(
                f"mint_budget.{key}", "unknown key (expected one of: tokens, seconds)"
            )
    return MintBudget(**value)

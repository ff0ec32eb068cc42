"""Fallback and retry policies: configuration objects, loading and validation."""

try:
    from statemachine._clash import check_no_clash
except ModuleNotFoundError:  # another package named 'statemachine' shadows ours entirely
    raise ImportError(
        "the 'statemachine' package found first is not secured-activation's "
        "(python-statemachine installs one of the same name): use a virtual environment "
        "of its own for secured-activation"
    ) from None
check_no_clash()

# ruff: noqa: E402 - the clash check must run before the engine is imported

from policies.budget import MintBudget
from policies.errors import PolicyError
from policies.fallback import AnonymousFallbackPolicy, DefensivePolicy
from policies.loading import load_policy
from policies.retry import DEFAULT_RETRY_ON, RETRYABLE, RetryPolicy
from statemachine.protocol.policy import ActivationPolicy, Fallback

__all__ = [
    "DEFAULT_RETRY_ON",
    "RETRYABLE",
    "ActivationPolicy",
    "AnonymousFallbackPolicy",
    "DefensivePolicy",
    "Fallback",
    "MintBudget",
    "PolicyError",
    "RetryPolicy",
    "load_policy",
]

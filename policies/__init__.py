"""Fallback and retry policies: configuration objects, loading and validation."""

from policies.errors import PolicyError
from policies.fallback import AnonymousFallbackPolicy, DefensivePolicy
from policies.loading import load_policy
from policies.retry import DEFAULT_RETRY_ON, RETRYABLE, RetryPolicy
from statemachine.policy import ActivationPolicy, Fallback

__all__ = [
    "DEFAULT_RETRY_ON",
    "RETRYABLE",
    "ActivationPolicy",
    "AnonymousFallbackPolicy",
    "DefensivePolicy",
    "Fallback",
    "PolicyError",
    "RetryPolicy",
    "load_policy",
]

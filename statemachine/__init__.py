"""secured-activation: an explicit state machine for the tag's secured authentication activation."""

from statemachine.activator import Activator, LocalActivator
from statemachine.errors import ActivationError, TransitionNotAllowed
from statemachine.options import AuthenticationOption, fingerprint
from statemachine.policy import ActivationPolicy, Fallback, RetryStrategy
from statemachine.reasons import FailureReason
from statemachine.results import ActivationResult, HistoryEntry
from statemachine.sessions import ActivationSession, AsyncActivationSession, TokenProvider
from statemachine.states import State, Trigger

__all__ = [
    "ActivationError",
    "ActivationPolicy",
    "ActivationResult",
    "ActivationSession",
    "Activator",
    "AsyncActivationSession",
    "AuthenticationOption",
    "FailureReason",
    "Fallback",
    "HistoryEntry",
    "LocalActivator",
    "RetryStrategy",
    "State",
    "TokenProvider",
    "TransitionNotAllowed",
    "Trigger",
    "fingerprint",
]

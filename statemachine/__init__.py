"""secured-activation: an explicit state machine for the tag's secured authentication activation."""

from statemachine._clash import check_no_clash

check_no_clash()

# ruff: noqa: E402 - the clash check must run before anything else is imported

from statemachine.activator import Activator, LocalActivator
from statemachine.errors import ActivationError, TransitionNotAllowed
from statemachine.events import TransitionEvent
from statemachine.options import AuthenticationOption, fingerprint
from statemachine.policy import ActivationPolicy, Fallback, RetryStrategy
from statemachine.reasons import FailureReason
from statemachine.replies import Answer, ReportReply, TokenReply, TrackerView
from statemachine.results import ActivationResult, HistoryEntry
from statemachine.sessions import ActivationSession, AsyncActivationSession, TokenProvider
from statemachine.snapshots import SnapshotError
from statemachine.states import State, Trigger
from statemachine.stores.base import StoreError
from statemachine.trackers import ActivationTracker, AsyncActivationTracker
from statemachine.tracking import TrackerInputError
from statemachine.workers import WorkerPool

__all__ = [
    "ActivationError",
    "ActivationPolicy",
    "ActivationResult",
    "ActivationSession",
    "ActivationTracker",
    "Activator",
    "Answer",
    "AsyncActivationSession",
    "AsyncActivationTracker",
    "AuthenticationOption",
    "FailureReason",
    "Fallback",
    "HistoryEntry",
    "LocalActivator",
    "ReportReply",
    "RetryStrategy",
    "SnapshotError",
    "State",
    "StoreError",
    "TokenProvider",
    "TokenReply",
    "TrackerInputError",
    "TrackerView",
    "TransitionEvent",
    "TransitionNotAllowed",
    "Trigger",
    "WorkerPool",
    "fingerprint",
]

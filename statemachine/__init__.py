"""secured-activation: an explicit state machine for the tag's secured authentication activation."""

import sys

from statemachine._clash import check_no_clash

check_no_clash()

# ruff: noqa: E402 - the clash check must run before anything else is imported

from statemachine.engine.snapshots import SnapshotError
from statemachine.hostcalls import activator, workers
from statemachine.hostcalls.activator import Activator, LocalActivator
from statemachine.hostcalls.workers import WorkerPool
from statemachine.protocol.errors import ActivationError, TransitionNotAllowed
from statemachine.protocol.options import AuthenticationOption, fingerprint
from statemachine.protocol.policy import ActivationPolicy, Fallback, RetryStrategy
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.replies import Answer, ReportReply, TokenReply, TrackerView
from statemachine.protocol.results import ActivationResult, HistoryEntry
from statemachine.protocol.states import State, Trigger
from statemachine.sessions import ActivationSession, AsyncActivationSession, TokenProvider
from statemachine.signals import events, metrics
from statemachine.signals.events import TransitionEvent
from statemachine.stores.base import StoreError
from statemachine.tracking._faces import ActivationTracker, AsyncActivationTracker
from statemachine.tracking._rules import TrackerInputError

# The module paths the README documents, kept where the modules moved from:
# ``statemachine.metrics`` *is* ``statemachine.signals.metrics`` (one module, so
# patching either patches both); ``statemachine/metrics.pyi`` and its siblings
# tell type checkers the same.
for _module in (activator, events, metrics, workers):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module
del _module

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

"""The tag-driven driver: its rules (``_rules``), its visitor record (``_record``) and
its two faces (``_faces``), on the stores of ``statemachine.stores``."""

from statemachine.tracking._faces import ActivationTracker, AsyncActivationTracker
from statemachine.tracking._rules import TrackerInputError

__all__ = ["ActivationTracker", "AsyncActivationTracker", "TrackerInputError"]

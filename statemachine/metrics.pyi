"""For type checkers: ``statemachine.metrics`` is ``statemachine.signals.metrics``."""

from statemachine.signals.metrics import *  # noqa: F403

"""For type checkers: ``statemachine.events`` is ``statemachine.signals.events``."""

from statemachine.signals.events import *  # noqa: F403

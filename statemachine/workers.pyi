"""For type checkers: ``statemachine.workers`` is ``statemachine.hostcalls.workers``."""

from statemachine.hostcalls.workers import *  # noqa: F403

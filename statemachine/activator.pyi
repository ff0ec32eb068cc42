"""For type checkers: ``statemachine.activator`` is ``statemachine.hostcalls.activator``."""

from statemachine.hostcalls.activator import *  # noqa: F403

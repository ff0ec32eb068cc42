"""``python -m statemachine`` works like the ``secured-activation`` command."""

from statemachine.tools.cli import run

run()

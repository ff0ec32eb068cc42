"""``python -m statemachine`` works like the ``secured-activation`` command."""

from statemachine.cli import run

run()

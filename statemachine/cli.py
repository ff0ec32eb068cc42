"""The command's entry point where console scripts installed before the regrouping look for it."""

from statemachine.tools.cli import main, run

__all__ = ["main", "run"]

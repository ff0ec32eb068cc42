"""The one error a policy raises, naming the field at fault."""

from __future__ import annotations


class PolicyError(ValueError):
    """An invalid policy value or key; ``field`` is its dotted path (``retry.max_retries``)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")

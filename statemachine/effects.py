"""What the sans-IO core asks a driver to do next.

The core never performs I/O; it answers each event with one of these, and a
driver (asyncio or blocking) performs it and reports back.
"""

from __future__ import annotations

from dataclasses import dataclass

from statemachine.options import AuthenticationOption
from statemachine.results import ActivationResult
from statemachine.states import Trigger


@dataclass(frozen=True, slots=True)
class FetchToken:
    attempt: int
    timeout: float | None


@dataclass(frozen=True, slots=True)
class CallActivator:
    option: AuthenticationOption
    attempt: int
    timeout: float | None
    on_success: Trigger
    on_failure: Trigger


@dataclass(frozen=True, slots=True)
class BackOff:
    delay: float
    retry: int


@dataclass(frozen=True, slots=True)
class Finish:
    result: ActivationResult


Effect = FetchToken | CallActivator | BackOff | Finish


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a driver observed while performing an effect: a value or an error."""

    value: object = None
    error: BaseException | None = None

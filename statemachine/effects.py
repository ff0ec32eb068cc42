"""What the sans-IO core asks a driver to do next.

The core never performs I/O; it answers each event with one of these, and a
driver (asyncio or blocking) performs it and reports back. They are named
tuples: immutable, and several times cheaper to build than frozen dataclasses
on a path that runs for every step of every visitor.
"""

from __future__ import annotations

from typing import NamedTuple

from statemachine.options import AuthenticationOption
from statemachine.results import ActivationResult
from statemachine.states import Trigger


class FetchToken(NamedTuple):
    attempt: int
    timeout: float | None
    refresh: bool = False  # for an authenticated visitor, who stays authenticated meanwhile


class CallActivator(NamedTuple):
    option: AuthenticationOption
    attempt: int
    timeout: float | None
    on_success: Trigger
    on_failure: Trigger


class BackOff(NamedTuple):
    delay: float
    retry: int


class Finish(NamedTuple):
    result: ActivationResult


Effect = FetchToken | CallActivator | BackOff | Finish


class Outcome(NamedTuple):
    """What a driver observed while performing an effect: a value or an error."""

    value: object = None
    error: BaseException | None = None

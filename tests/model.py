"""Model-based testing over the transition table, as XState's test model does.

Every row gets a *witness*: the event payload that makes it fire. A breadth
first walk from the initial state then gives the shortest event path to every
state and to every transition.
"""

from __future__ import annotations

from collections import deque
from itertools import product
from typing import Any

from statemachine import AuthenticationOption, FailureReason, State, Trigger
from statemachine.engine._core import ActivationCore
from statemachine.engine._effects import Effect
from statemachine.protocol.policy import Fallback, Profile
from statemachine.protocol.states import FLOW_STARTS
from statemachine.protocol.table import Row, rows_for

ALL_PROFILES = tuple(Profile(a, b) for a, b in product(Fallback, Fallback))


def profile_id(profile: Profile) -> str:
    return (
        f"token-{profile.on_token_failure.value}/activation-{profile.on_activation_failure.value}"
    )


def witness(row: Row, step: int = 0) -> dict[str, Any]:
    """Keyword arguments for ``core.fire`` that make exactly this row fire."""
    if row.trigger in (Trigger.TOKEN_RECEIVED, Trigger.TOKEN_REFRESHED):
        return {"option": AuthenticationOption.secured(f"token-{step}")}
    if row.trigger in (Trigger.TOKEN_FAILED, Trigger.REFRESH_FAILED):
        return {"reason": FailureReason.TOKEN_UNAVAILABLE}
    if row.trigger in (Trigger.ACTIVATION_FAILED_FINAL, Trigger.REFRESH_REJECTED):
        return {"reason": FailureReason.INVALID_SIGNATURE}
    if row.trigger is Trigger.ACTIVATION_FAILED:
        retryable = row.guard is not None
        return {
            "reason": FailureReason.SERVER_ERROR if retryable else FailureReason.INVALID_SIGNATURE
        }
    if row.trigger is Trigger.ANONYMOUS_FAILED:
        return {"reason": FailureReason.SERVER_ERROR}
    return {}


def shortest_paths(profile: Profile, *, sessions_only: bool = False) -> dict[State, list[Row]]:
    """``sessions_only``: the paths an engine-driven session can take (no tracker rows)."""
    rows = [r for r in rows_for(profile) if not (sessions_only and r.tracker_only)]
    paths: dict[State, list[Row]] = {State.UNAUTHENTICATED: []}
    queue = deque([State.UNAUTHENTICATED])
    while queue:
        state = queue.popleft()
        for row in rows:
            if row.source == state and row.dest not in paths:
                paths[row.dest] = [*paths[state], row]
                queue.append(row.dest)
    return paths


def path_to_row(profile: Profile, row: Row, *, sessions_only: bool = False) -> list[Row]:
    return [*shortest_paths(profile, sessions_only=sessions_only)[row.source], row]


def apply(core: ActivationCore, row: Row, step: int = 0) -> Effect | None:
    if row.trigger in FLOW_STARTS:
        return core.begin(row.trigger)
    return core.fire(row.trigger, **witness(row, step))


def drive_to(core: ActivationCore, state: State, profile: Profile) -> None:
    for step, row in enumerate(shortest_paths(profile)[state]):
        apply(core, row, step)
    assert core.state is state

"""Replay the shortest event path to every transition against both session types.

The core tests step the machine by hand; here the same paths are produced by
real sessions talking to scripted adapters, and the state is checked at every
step: each adapter records the state it was called in, each host call is
checked against the state and history the path predicts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from policies import RetryPolicy
from statemachine import ActivationSession, AsyncActivationSession, FailureReason, State, Trigger
from statemachine.protocol.policy import Fallback, Profile
from statemachine.protocol.table import Row, rows_for
from tests.helpers import HANG, Script, ScriptedAdapters, transitions_of
from tests.model import ALL_PROFILES, path_to_row, profile_id, witness
from tests.test_transitions import _Policy

HOST_TRIGGERS = {Trigger.ACTIVATE, Trigger.ACTIVATE_ANONYMOUSLY, Trigger.REVERIFY, Trigger.LOGOUT}
# Rows the host-call paths below cannot script: the platform session's clock and the refresh
# that keeps a visitor authenticated are replayed through real sessions in tests/test_refresh.py.
REFRESH_TRIGGERS = {
    Trigger.SESSION_EXPIRED,
    Trigger.TOKEN_REFRESHED,
    Trigger.REFRESH_FAILED,
    Trigger.REFRESH_REJECTED,
}
ADAPTER_STATE = {
    Trigger.TOKEN_RECEIVED: State.FETCHING_TOKEN,
    Trigger.TOKEN_FAILED: State.FETCHING_TOKEN,
    Trigger.ACTIVATION_SUCCEEDED: State.ACTIVATING,
    Trigger.ACTIVATION_FAILED: State.ACTIVATING,
    Trigger.ANONYMOUS_SUCCEEDED: State.ACTIVATING_ANONYMOUS,
    Trigger.ANONYMOUS_FAILED: State.ACTIVATING_ANONYMOUS,
}


def completed(profile: Profile, path: list[Row]) -> list[Row]:
    """A session runs flows to their end: extend the path by the shortest way to rest."""
    rows = [
        r
        for r in rows_for(profile)
        if r.trigger not in HOST_TRIGGERS | REFRESH_TRIGGERS | {Trigger.CANCEL}
        and not r.tracker_only
    ]
    tails: dict[State, list[Row]] = {path[-1].dest: []}
    frontier = [path[-1].dest]
    while frontier and not any(not s.in_flight for s in tails):
        state = frontier.pop(0)
        for row in rows:
            if row.source is state and row.dest not in tails:
                tails[row.dest] = [*tails[state], row]
                frontier.append(row.dest)
    resting = [s for s in tails if not s.in_flight]
    return [*path, *tails[resting[0]]]


def script_for(path: list[Row]) -> Script:
    script = Script(provider=[], secured=[], anonymous=[])
    for step, row in enumerate(path):
        payload = witness(row, step)
        if row.trigger is Trigger.TOKEN_RECEIVED:
            script.provider.append(payload["option"].token)
        elif row.trigger is Trigger.TOKEN_FAILED:
            script.provider.append(None)
        elif row.trigger is Trigger.ACTIVATION_SUCCEEDED:
            script.secured.append(None)
        elif row.trigger is Trigger.ACTIVATION_FAILED:
            script.secured.append(payload["reason"])
        elif row.trigger is Trigger.ANONYMOUS_SUCCEEDED:
            script.anonymous.append(None)
        elif row.trigger is Trigger.ANONYMOUS_FAILED:
            script.anonymous.append(payload["reason"])
        elif row.trigger is Trigger.CANCEL:
            {
                State.FETCHING_TOKEN: script.provider,
                State.ACTIVATING: script.secured,
                State.ACTIVATING_ANONYMOUS: script.anonymous,
            }.get(row.source, []).append(HANG)
    for items in (script.provider, script.secured, script.anonymous):
        items.append(AssertionError("the path asked for no more calls"))
    return script


def segments(path: list[Row]) -> list[list[Row]]:
    """Split a path into host calls: each starts with a host trigger."""
    parts: list[list[Row]] = []
    for row in path:
        if row.trigger in HOST_TRIGGERS or not parts:
            parts.append([row])
        else:
            parts[-1].append(row)
    return parts


def policy_for(profile: Profile, path: list[Row]) -> Any:
    slow = any(r.trigger is Trigger.CANCEL and r.source is State.RETRYING for r in path)
    delay = 30.0 if slow else 0.0
    retry = RetryPolicy(base_delay=delay, max_delay=delay, jitter=0.0)
    return _Policy(*profile, retry=retry, token_timeout=30.0, activation_timeout=30.0)


CASES = [
    pytest.param(profile, row, id=f"{profile_id(profile)}:{row.source}-{row.trigger}-{row.dest}")
    for profile in ALL_PROFILES
    for row in rows_for(profile)
    if not row.tracker_only  # the tracker's rows are replayed by tests/test_tracker.py
    and row.trigger not in REFRESH_TRIGGERS
]


def expected_adapter_states(path: list[Row]) -> list[State]:
    states = [ADAPTER_STATE[r.trigger] for r in path if r.trigger in ADAPTER_STATE]
    cancel = path[-1] if path[-1].trigger is Trigger.CANCEL else None
    if cancel is not None and cancel.source is not State.RETRYING:
        states.append(cancel.source)
    return states


def wait_until_cancellable(script: Script, session: Any, state: State) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if session.state is state and (state is State.RETRYING or script.entered.is_set()):
            return
        time.sleep(0.001)
    raise AssertionError(f"never reached {state}")


def check_segment(session: Any, segment: list[Row], seen_before: int) -> None:
    assert session.state is segment[-1].dest
    if segment[0].trigger is Trigger.LOGOUT:
        assert session.history == ()
        return
    assert transitions_of(session.history[seen_before:]) == [
        (r.source.value, r.trigger.value, r.dest.value) for r in segment
    ]


@pytest.mark.parametrize(("profile", "row"), CASES)
def test_path_replayed_by_blocking_session(profile: Profile, row: Row) -> None:
    path = completed(profile, path_to_row(profile, row, sessions_only=True))
    script = script_for(path)
    adapters = ScriptedAdapters(script, is_async=False)
    session = ActivationSession(adapters.provider, adapters.activator, policy_for(profile, path))
    adapters.session = session
    try:
        for segment in segments(path):
            seen = len(session.history)
            host = segment[0].trigger
            if host is Trigger.LOGOUT:
                session.logout()
            elif segment[-1].trigger is Trigger.CANCEL:
                results: list[Any] = []
                worker = threading.Thread(
                    target=lambda h=host, out=results: out.append(getattr(session, h.value)())
                )
                worker.start()
                wait_until_cancellable(script, session, segment[-1].source)
                assert session.cancel()
                worker.join(10)
                assert results
                assert results[0].reason is FailureReason.CANCELLED
            else:
                result = getattr(session, host.value)()
                assert result.state is segment[-1].dest
            check_segment(session, segment, seen)
        assert script.seen_states == expected_adapter_states(path)
    finally:
        script.release.set()


@pytest.mark.parametrize(("profile", "row"), CASES)
def test_path_replayed_by_async_session(profile: Profile, row: Row) -> None:
    path = completed(profile, path_to_row(profile, row, sessions_only=True))
    script = script_for(path)
    adapters = ScriptedAdapters(script, is_async=True)
    session = AsyncActivationSession(
        adapters.provider, adapters.activator, policy_for(profile, path)
    )
    adapters.session = session

    async def replay() -> None:
        for segment in segments(path):
            seen = len(session.history)
            host = segment[0].trigger
            if host is Trigger.LOGOUT:
                await session.logout()
            elif segment[-1].trigger is Trigger.CANCEL:
                task = asyncio.ensure_future(getattr(session, host.value)())
                while not (
                    session.state is segment[-1].source
                    and (segment[-1].source is State.RETRYING or script.entered.is_set())
                ):
                    await asyncio.sleep(0.001)
                assert session.cancel()
                result = await asyncio.wait_for(task, 10)
                assert result.reason is FailureReason.CANCELLED
            else:
                result = await getattr(session, host.value)()
                assert result.state is segment[-1].dest
            check_segment(session, segment, seen)

    asyncio.run(replay())
    assert script.seen_states == expected_adapter_states(path)


def test_every_state_is_reachable_in_every_profile() -> None:
    from tests.model import shortest_paths

    for profile in ALL_PROFILES:
        assert set(shortest_paths(profile)) == set(State), profile


def test_defensive_machine_has_no_fallback_edge() -> None:
    rows = rows_for(Profile(Fallback.BLOCK, Fallback.BLOCK))
    into_fallback = [r for r in rows if r.dest is State.ACTIVATING_ANONYMOUS]
    assert {r.trigger for r in into_fallback} == {Trigger.ACTIVATE_ANONYMOUSLY}

"""Listeners: every transition heard once, a failing listener changes nothing, log context.

One test per rule, on real sessions and trackers with real tokens.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import pytest
import structlog

from policies import DefensivePolicy
from statemachine import (
    ActivationSession,
    ActivationTracker,
    AsyncActivationSession,
    LocalActivator,
    State,
    Trigger,
)
from statemachine.protocol.options import SECURED
from statemachine.signals.events import TransitionEvent
from statemachine.stores import MemoryStore
from statemachine.tokens import TokenIssuer, TokenVerifier
from tests.tracker_harness import CountingProvider, callback, new_flow

FACES = [ActivationSession, AsyncActivationSession]


def run(session: Any, method: str, *args: Any, **kw: Any) -> Any:
    value = getattr(session, method)(*args, **kw)
    return asyncio.run(value) if asyncio.iscoroutine(value) else value


@pytest.fixture
def provider(issuer: TokenIssuer) -> CountingProvider:
    return CountingProvider(partial(issuer.issue, "visitor-9"))


# -- listeners ------------------------------------------------------------------
@pytest.mark.parametrize("face", FACES)
def test_listeners_hear_every_transition_sync_and_async(
    face: Any, provider: CountingProvider, verifier: TokenVerifier
) -> None:
    heard: list[TransitionEvent] = []
    heard_async: list[TransitionEvent] = []

    async def async_listener(event: TransitionEvent) -> None:
        await asyncio.sleep(0)
        heard_async.append(event)

    session = face(provider, LocalActivator(verifier), DefensivePolicy())
    session.add_listener(heard.append)
    session.add_listener(async_listener)
    result = run(session, "activate")
    assert [(e.source, e.dest) for e in heard] == [(h.source, h.dest) for h in session.history]
    assert heard == heard_async
    event = heard[-1]
    assert event.session_id == session.session_id
    assert event.trigger is Trigger.ACTIVATION_SUCCEEDED
    assert event.token_fingerprint == result.option.fingerprint
    assert event.policy == "defensive"
    assert event.flow_started_at is not None
    assert event.flow_started_at <= event.at
    assert result.option.token not in repr(heard) + str([e.to_dict() for e in heard])


@pytest.mark.parametrize("face", FACES)
def test_a_listener_that_raises_changes_no_outcome(
    face: Any, provider: CountingProvider, verifier: TokenVerifier, logs: list[dict[str, Any]]
) -> None:
    def broken(event: TransitionEvent) -> None:
        raise RuntimeError(f"listener bug {event}")

    async def broken_async(event: TransitionEvent) -> None:
        raise RuntimeError("async listener bug")

    session = face(provider, LocalActivator(verifier), DefensivePolicy())
    session.add_listener(broken)
    session.add_listener(broken_async)
    assert run(session, "activate").state is State.AUTHENTICATED
    errors = [e for e in logs if e["event"] == "activation.listener_error"]
    assert len(errors) == 6  # two listeners x three transitions
    assert {e["error_type"] for e in errors} == {"RuntimeError"}
    with pytest.raises(TypeError):
        session.add_listener("not callable")


@pytest.mark.parametrize("face", FACES)
def test_an_object_naming_its_function_has_that_function_called(
    face: Any, provider: CountingProvider, verifier: TokenVerifier
) -> None:
    """``_transition_call``: the loop calls the named function, once per event; removal works."""
    heard: list[TransitionEvent] = []

    class Named:
        def __init__(self) -> None:
            self._transition_call = heard.append

        def __call__(self, event: TransitionEvent) -> None:
            raise AssertionError("the object itself is not called")

    listener = Named()
    session = face(provider, LocalActivator(verifier), DefensivePolicy())
    assert session.add_listener(listener) is listener
    run(session, "activate")
    assert [(e.source, e.dest) for e in heard] == [(h.source, h.dest) for h in session.history]
    session.remove_listener(listener)
    again = face(provider, LocalActivator(verifier), DefensivePolicy())
    again.add_listener(listener)
    again.remove_listener(listener)
    run(again, "activate")
    assert len(heard) == len(session.history)  # nothing heard from the session it left


def test_tracker_listeners_hear_committed_transitions_once(provider: CountingProvider) -> None:
    heard: list[TransitionEvent] = []
    store = MemoryStore()
    first = ActivationTracker(DefensivePolicy(), store)
    second = ActivationTracker(DefensivePolicy(), store)  # another worker: conflicts, retries
    first.add_listener(heard.append)
    second.add_listener(heard.append)
    flow = new_flow()
    first.token_request("v", flow, provider)
    second.token_request("v", flow, provider)  # its guess conflicts, then it steps again
    first.report("v", flow, callback(True, SECURED))
    history = first.view("v").history
    assert [(e.source, e.trigger, e.dest) for e in heard] == [
        (h.source, h.trigger, h.dest) for h in history
    ]


# -- log context ---------------------------------------------------------------------
def test_a_transition_logs_under_the_request_that_caused_it(provider: CountingProvider) -> None:
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    tracker = ActivationTracker(DefensivePolicy(), MemoryStore())
    flow = new_flow()
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as captured:
        with structlog.contextvars.bound_contextvars(request_id="req-token"):
            tracker.token_request("v", flow, provider)
        with structlog.contextvars.bound_contextvars(request_id="req-report"):
            tracker.report("v", flow, callback(True, SECURED))
    transitions = [e for e in captured if e["event"] == "activation.transition"]
    by_trigger = {e["trigger"]: e["request_id"] for e in transitions}
    assert by_trigger["activate"] == "req-token"
    assert by_trigger["token_received"] == "req-token"
    assert by_trigger["activation_succeeded"] == "req-report"
    assert all(
        e["token_fingerprint"] is None or e["token_fingerprint"].startswith("sha256:")
        for e in transitions
    )


class _Stop(BaseException):
    """A host's BaseException (not an Exception): it may go up, but the session must come to rest."""


@pytest.mark.parametrize("face", FACES)
def test_a_listener_raising_a_base_exception_on_the_first_step_leaves_no_flow_in_flight(
    face: Any, provider: CountingProvider, verifier: TokenVerifier
) -> None:
    def stop(event: TransitionEvent) -> None:
        if event.dest is State.FETCHING_TOKEN:
            raise _Stop

    session = face(provider, LocalActivator(verifier), DefensivePolicy())
    session.add_listener(stop)
    with pytest.raises(_Stop):
        run(session, "activate")
    assert session.state is State.UNAUTHENTICATED  # was fetching_token for ever
    assert not session.cancel()  # no flow left behind to claim it cancels
    session.remove_listener(stop)
    assert run(session, "activate").state is State.AUTHENTICATED

"""Snapshots: round trips, what an in-flight snapshot becomes, and refusal of damage."""

from __future__ import annotations

import json
import threading
from functools import partial
from typing import Any

import pytest

from statemachine import (
    ActivationSession,
    AsyncActivationSession,
    HistoryEntry,
    LocalActivator,
    SnapshotError,
    State,
    TransitionEvent,
    Trigger,
)
from statemachine.engine.snapshots import SNAPSHOT_FORMAT, SNAPSHOT_HISTORY_LIMIT
from statemachine.tokens import TokenIssuer, TokenVerifier
from tests.helpers import defensive


@pytest.fixture
def authenticated(issuer: TokenIssuer, verifier: TokenVerifier) -> tuple[ActivationSession, str]:
    tokens: list[str] = []

    def provider() -> str:
        tokens.append(issuer.issue("visitor-7"))
        return tokens[-1]

    session = ActivationSession(provider, LocalActivator(verifier), defensive())
    assert session.activate().state is State.AUTHENTICATED
    return session, tokens[-1]


def test_snapshot_is_json_safe_and_holds_no_token(
    authenticated: tuple[ActivationSession, str],
) -> None:
    session, token = authenticated
    snapshot = session.snapshot()
    text = json.dumps(snapshot)
    assert token not in text
    assert snapshot["format"] == SNAPSHOT_FORMAT
    assert snapshot["state"] == "authenticated"
    assert snapshot["token_fingerprint"].startswith("sha256:")
    assert snapshot["session_id"] == session.session_id
    assert [h[2] for h in snapshot["history"]] == [
        "activate",
        "token_received",
        "activation_succeeded",
    ]


@pytest.mark.parametrize("face", [ActivationSession, AsyncActivationSession])
def test_settled_snapshot_restores_exactly(
    authenticated: tuple[ActivationSession, str],
    face: Any,
    issuer: TokenIssuer,
    verifier: TokenVerifier,
) -> None:
    session, _ = authenticated
    snapshot = json.loads(json.dumps(session.snapshot()))
    restored = face.restore(
        snapshot, partial(issuer.issue, "visitor-7"), LocalActivator(verifier), defensive()
    )
    assert restored.state is State.AUTHENTICATED
    assert restored.session_id == session.session_id
    assert restored.history == session.history
    assert restored.snapshot() == snapshot


def test_restored_session_goes_on_through_the_table(
    authenticated: tuple[ActivationSession, str], issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    session, _ = authenticated
    restored = ActivationSession.restore(
        session.snapshot(), partial(issuer.issue, "visitor-7"), LocalActivator(verifier)
    )
    assert restored.activate().reason.name == "ALREADY_ACTIVATED"
    assert restored.reverify().state is State.AUTHENTICATED
    restored.logout()
    assert restored.state is State.UNAUTHENTICATED
    assert restored.snapshot()["token_fingerprint"] is None


def test_in_flight_snapshot_restores_cancelled(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    release, entered = threading.Event(), threading.Event()

    def slow_provider() -> str:
        entered.set()
        release.wait(10)
        return issuer.issue("visitor-7")

    session = ActivationSession(slow_provider, LocalActivator(verifier), defensive())
    worker = threading.Thread(target=session.activate)
    worker.start()
    assert entered.wait(10)
    snapshot = session.snapshot()
    release.set()
    worker.join(10)
    assert snapshot["state"] == "fetching_token"
    restored = ActivationSession.restore(snapshot, slow_provider, LocalActivator(verifier))
    assert restored.state is State.UNAUTHENTICATED
    last = restored.history[-1]
    assert (last.source, last.trigger, last.dest) == (
        State.FETCHING_TOKEN,
        Trigger.CANCEL,
        State.UNAUTHENTICATED,
    )
    assert last.reason.name == "CANCELLED"


def test_history_is_capped_in_snapshots(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    session = ActivationSession(partial(issuer.issue, "v"), LocalActivator(verifier), defensive())
    session.activate()
    for _ in range(SNAPSHOT_HISTORY_LIMIT + 1):
        session.reverify()
    assert len(session.history) > SNAPSHOT_HISTORY_LIMIT
    snapshot = session.snapshot()
    assert len(snapshot["history"]) == SNAPSHOT_HISTORY_LIMIT
    assert ActivationSession.restore(snapshot, session._provider, LocalActivator(verifier))


def _damage(snapshot: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    damaged = dict(snapshot)
    if value is KeyError:
        del damaged[key]
    else:
        damaged[key] = value
    return damaged


DAMAGE = [
    ("format", SNAPSHOT_FORMAT + 1, f"unsupported version {SNAPSHOT_FORMAT + 1}"),
    ("format", "1", "format: must be an integer"),
    ("format", KeyError, "format: must be an integer"),
    ("state", "flying", "state: unknown value"),
    ("state", None, "state: unknown value"),
    ("attempts", -1, "attempts"),
    ("attempts", True, "attempts"),
    ("attempts", 10**9, "attempts"),
    ("reason", "NOPE", "reason: unknown failure reason"),
    ("token_fingerprint", "eyJhbGciOi", "token_fingerprint"),
    ("since", float("nan"), "since"),
    ("since", "yesterday", "since"),
    ("history", "[]", "history"),
    ("history", [["a"]], "history[0]"),
    ("history", [["unauthenticated", "x", "activate", 0, None, 1.0]], "history[0]"),
    ("session_id", "", "session_id"),
    ("session_id", "x" * 500, "session_id"),
    ("flow", "fly", "flow"),
    ("flow_id", "a b", "flow_id"),
    ("lease_until", float("inf"), "lease_until"),
    ("extra", 1, "extra: unknown field"),
    ("policy", KeyError, "policy: missing"),
    # What JSON text can hold: a list or an object where a name goes, an integer past a float.
    ("flow", [], "flow: must be null"),
    ("flow", {}, "flow: must be null"),
    ("since", 10**400, "since: must be a finite"),
    ("flow_started_at", json.loads("1" + "0" * 400), "flow_started_at: must be a finite"),
    (
        "history",
        [["unauthenticated", "fetching_token", "activate", 0, None, 10**400]],
        "history[0]",
    ),
]


@pytest.mark.parametrize(("key", "value", "message"), DAMAGE)
def test_damaged_snapshot_is_refused_whole(
    authenticated: tuple[ActivationSession, str], key: str, value: Any, message: str
) -> None:
    session, _ = authenticated
    damaged = _damage(session.snapshot(), key, value)
    with pytest.raises(SnapshotError) as caught:
        ActivationSession.restore(
            damaged, session._provider, LocalActivator.__new__(LocalActivator)
        )
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("bad", [None, [], "snapshot", 3, b"{}"])
def test_snapshot_that_is_not_a_mapping(bad: Any, verifier: TokenVerifier) -> None:
    with pytest.raises(SnapshotError, match="must be a mapping"):
        ActivationSession.restore(bad, lambda: "t", LocalActivator(verifier))


def test_in_flight_snapshot_must_name_its_flow(
    authenticated: tuple[ActivationSession, str], verifier: TokenVerifier
) -> None:
    session, _ = authenticated
    damaged = {**session.snapshot(), "state": "activating", "flow": None}
    with pytest.raises(SnapshotError, match="must name its flow"):
        ActivationSession.restore(damaged, lambda: "t", LocalActivator(verifier))


# -- formats: a session's snapshot, the tracker's record, and format 1 still read ------
FORMAT_1_RECORD = (
    '{"format":1,"session_id":"0152224cd727a037","policy":"defensive","state":"activating",'
    '"flow":"activate","flow_id":"flowAAAA","attempts":2,"reason":"SERVER_ERROR",'
    '"token_fingerprint":"sha256:6b046674b2c03e4a","since":1800000000.0,'
    '"flow_started_at":1800000000.0,"lease_until":1800000024.0,"ended_flows":[],"history":['
    '["unauthenticated","fetching_token","activate",0,null,1800000000.0],'
    '["fetching_token","activating","token_received",1,null,1800000000.0],'
    '["activating","retrying","activation_failed",1,"SERVER_ERROR",1800000000.0],'
    '["retrying","fetching_token","backoff_elapsed",1,null,1800000000.0],'
    '["fetching_token","activating","token_received",2,null,1800000000.0]]}'
)
"""A visitor as the previous version's tracker stored it (format 1: one flat dict)."""


def test_a_session_snapshot_carries_no_tracker_fields(
    authenticated: tuple[ActivationSession, str],
) -> None:
    snapshot = authenticated[0].snapshot()
    assert not {"flow_id", "lease_until", "ended_flows"} & snapshot.keys()


def test_a_format_1_session_snapshot_is_still_read(
    authenticated: tuple[ActivationSession, str], verifier: TokenVerifier
) -> None:
    session, _ = authenticated
    current = session.snapshot()
    old = {**current, "format": 1, "flow_id": None, "lease_until": None, "ended_flows": []}
    restored = ActivationSession.restore(old, session._provider, LocalActivator(verifier))
    assert restored.state is State.AUTHENTICATED
    assert restored.history == session.history
    assert restored.snapshot() == current  # written back in the current format


def test_a_format_1_snapshot_still_needs_its_tracker_fields(
    authenticated: tuple[ActivationSession, str], verifier: TokenVerifier
) -> None:
    session, _ = authenticated
    old = {**session.snapshot(), "format": 1}
    with pytest.raises(SnapshotError, match="ended_flows: missing"):
        ActivationSession.restore(old, session._provider, LocalActivator(verifier))


@pytest.mark.parametrize("kind", ["async", "blocking"])
def test_a_format_1_tracker_record_is_still_read_and_goes_on(
    kind: str, issuer: TokenIssuer
) -> None:
    import asyncio

    from statemachine import ActivationTracker, AsyncActivationTracker, TokenReply
    from statemachine.protocol.replies import Answer
    from statemachine.stores.memory import MemoryStore

    store = MemoryStore()
    assert store.compare_and_set("v1", 0, FORMAT_1_RECORD, 60)[0]
    clock = 1_800_000_001.0
    if kind == "async":
        tracker: Any = AsyncActivationTracker(defensive(), store, clock=lambda: clock)
        view = asyncio.run(tracker.view("v1"))
    else:
        tracker = ActivationTracker(defensive(), store, clock=lambda: clock)
        view = tracker.view("v1")
    assert (view.state, view.flow_id, view.lease_until) == (
        State.ACTIVATING,
        "flowAAAA",
        1800000024.0,
    )
    assert (view.attempts, view.token_fingerprint) == (2, "sha256:6b046674b2c03e4a")
    assert len(view.history) == 5
    # The same flow asks again: the tag's retry, taken from the old record.
    ask = tracker.token_request("v1", "flowAAAA", partial(issuer.issue, "visitor-7"))
    reply: TokenReply = asyncio.run(ask) if kind == "async" else ask
    assert (reply.answer, reply.attempt) == (Answer.TOKEN, 3)
    stored = json.loads(store.load("v1").data)
    assert stored["format"] == 2
    assert (stored["flow_id"], stored["session"]["format"]) == ("flowAAAA", SNAPSHOT_FORMAT)
    assert stored["session"]["session_id"] == "0152224cd727a037"


RECORD_DAMAGE = [
    ("flow_id", "a b", "flow_id"),
    ("lease_until", float("inf"), "lease_until"),
    ("lease_until", 10**400, "lease_until"),
    ("ended_flows", ["a b"], "ended_flows: not a flow id"),
    ("ended_flows", ["f"] * 9, "ended_flows: must be a list of at most 8"),
    ("session", KeyError, "session: missing"),
    ("session", {"format": 2}, "attempts: missing"),
    ("extra", 1, "extra: unknown field"),
]


@pytest.mark.parametrize(("key", "value", "message"), RECORD_DAMAGE)
def test_a_damaged_tracker_record_is_refused_whole(key: str, value: Any, message: str) -> None:
    from statemachine.tracking import _record as records

    record = records.dump(records.load(json.loads(FORMAT_1_RECORD), defensive()))
    assert record["format"] == records.RECORD_FORMAT
    with pytest.raises(SnapshotError) as caught:
        records.load(_damage(record, key, value), defensive())
    assert message in str(caught.value)


def test_a_damaged_format_1_record_is_refused_whole() -> None:
    from statemachine.tracking import _record as records

    old = json.loads(FORMAT_1_RECORD)
    with pytest.raises(SnapshotError, match="flow_id"):
        records.load({**old, "flow_id": "a b"}, defensive())


# -- one shape per transition -----------------------------------------------------
def test_a_transition_has_one_shape_everywhere(
    authenticated: tuple[ActivationSession, str],
) -> None:
    """The history, the events and the snapshot all hold ``HistoryEntry``s, written one way."""
    session, _ = authenticated
    heard: list[TransitionEvent] = []
    session.add_listener(heard.append)
    session.reverify()  # a refresh: one more transition
    entry = session.history[-1]
    assert type(entry) is HistoryEntry
    assert heard[-1].transition is entry
    event = heard[-1]
    assert (event.source, event.dest, event.trigger) == (entry.source, entry.dest, entry.trigger)
    assert (event.attempt, event.reason, event.at) == (entry.attempt, entry.reason, entry.at)
    assert event.to_dict() == {
        "session_id": session.session_id,
        **entry.to_dict(),
        "token_fingerprint": event.token_fingerprint,
        "policy": event.policy,
        "flow_started_at": event.flow_started_at,
        "ends_flow": event.ends_flow,
    }
    snapshot = session.snapshot()
    assert snapshot["history"] == [e.to_list() for e in session.history]
    assert snapshot["history"] == HistoryEntry.lists(session.history)
    assert entry.to_list() == [
        "authenticated",
        "authenticated",
        "token_refreshed",
        1,
        None,
        entry.at,
    ]
    restored = ActivationSession.restore(
        json.loads(json.dumps(snapshot)), session._provider, LocalActivator.__new__(LocalActivator)
    )
    assert restored.history == session.history


def test_history_entries_read_the_same_whatever_json_type_holds_them(
    authenticated: tuple[ActivationSession, str],
) -> None:
    """Integral times and str subclasses take the checked path and read as the plain ones."""

    class Text(str):
        pass

    session, _ = authenticated
    snapshot = session.snapshot()
    plain = ActivationSession.restore(
        snapshot, session._provider, LocalActivator.__new__(LocalActivator)
    ).history
    varied = _damage(
        snapshot,
        "history",
        [
            [Text(source), dest, Text(trigger), attempt, reason, int(at)]
            for source, dest, trigger, attempt, reason, at in snapshot["history"]
        ],
    )
    history = ActivationSession.restore(
        varied, session._provider, LocalActivator.__new__(LocalActivator)
    ).history
    assert [e._replace(at=float(int(e.at or 0))) for e in plain] == list(history)
    assert all(type(e.at) is float for e in history)

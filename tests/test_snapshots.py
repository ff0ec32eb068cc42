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
    LocalActivator,
    SnapshotError,
    State,
    Trigger,
)
from statemachine.snapshots import SNAPSHOT_FORMAT, SNAPSHOT_HISTORY_LIMIT
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
    ("format", 2, "unsupported version 2"),
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

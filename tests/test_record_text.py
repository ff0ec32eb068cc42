"""The visitor record's text, written directly, and read back without parsing what we wrote.

``records.dump_text`` must write exactly what ``json.dumps`` wrote from
``records.dump`` (the stored form is shared with other workers and versions),
and a record a tracker rebuilds from what it kept of its own write must be the
record the store's text parses to. Anything else the store says is parsed and
checked, even under a version the tracker wrote.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statemachine import ActivationTracker, AsyncActivationTracker
from statemachine.engine import snapshots
from statemachine.protocol.options import SECURED
from statemachine.stores import DamagedRecord, MemoryStore
from statemachine.stores.base import Versioned
from statemachine.tracking import _record as records
from tests.helpers import anonymous, defensive
from tests.tracker_harness import Clock, Face, callback, new_flow, tracker_operations


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _same_record(a: records.VisitorRecord, b: records.VisitorRecord) -> None:
    assert a.core.export() == b.core.export()
    assert (a.flow_id, a.lease_until, a.ended_flows, a.minted) == (
        b.flow_id,
        b.lease_until,
        b.ended_flows,
        b.minted,
    )


op = tracker_operations([0.5, 20.0, 100.0, 4000.0])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from([defensive, anonymous]),
    ops=st.lists(op, max_size=30),
    start=st.sampled_from([1_800_000_000.0, 1_800_000_000.25, 1_800_000_000]),
)
def test_the_text_is_json_dumps_and_a_kept_record_is_the_parsed_one(
    policy: Any, ops: list[Any], start: float
) -> None:
    clock = Clock(start)
    store = MemoryStore()
    tracker = ActivationTracker(policy(), store, clock=clock)
    minted = 0

    def provider() -> str | None:
        nonlocal minted
        minted += 1
        return None if minted % 5 == 0 else f"token-{minted}"

    for kind, flow, arg in ops:
        if kind == "wait":
            clock.now += arg
            continue
        try:
            if kind == "token":
                tracker.token_request("v", flow, provider if arg else None)
            elif kind == "report":
                succeeded, option_type = arg
                tracker.report("v", flow, callback(succeeded, option_type))
            else:
                tracker.logout("v")
        except ValueError:
            pass  # a report the flow does not await: refused, nothing written
        current = store.load("v")
        if current is None:
            continue
        parsed = records.load(json.loads(current.data), tracker.policy, clock)
        assert records.dump_text(parsed) == _json(records.dump(parsed))
        assert snapshots.dump_text(parsed.core) == _json(snapshots.dump(parsed.core))
        if type(start) is float:  # an integer clock's times are written as integers, read as floats
            assert records.dump_text(parsed) == current.data
        known = tracker._hints.get("v")
        if known is not None and known[0] == current and known[1] is not None:
            rebuilt = records.rebuild(known[1], tracker.policy, clock)
            if rebuilt is None:  # a time that reads back as another type: parsed instead
                assert type(start) is int
                continue
            _same_record(rebuilt, parsed)
            assert records.dump_text(rebuilt) == records.dump_text(parsed)


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1.5, 1e-7, 1e22, 1_800_000_000.123456, 7, None, float("nan"), float("inf")],
)
def test_json_number_writes_what_json_writes(value: Any) -> None:
    for _ in range(2):  # the second time from what it remembered
        assert snapshots.json_number(value) == json.dumps(value)
    assert snapshots.json_number(-0.0) == "-0.0"


class _SameVersionStore(MemoryStore):
    """A store that answers with the version the tracker wrote, over other text."""

    def __init__(self) -> None:
        super().__init__()
        self.replaced: str | None = None

    def load(self, key: str) -> Versioned | None:
        current = super().load(key)
        if current is None or self.replaced is None:
            return current
        return Versioned(current.version, self.replaced)


@pytest.mark.parametrize("kind", ["async", "blocking"])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "the stored visitor is not valid JSON"),
        ('{"format": 99}', "the stored visitor is damaged: invalid snapshot: format"),
    ],
)
def test_what_the_store_says_is_checked_even_under_our_own_version(
    kind: str, text: str, message: str
) -> None:
    store = _SameVersionStore()
    face = Face(kind, defensive(), store, Clock())
    try:
        flow = new_flow()
        face.token("v", flow, lambda: "a-token")
        assert face.view("v") is not None  # read back from what the tracker kept
        store.replaced = text
        with pytest.raises(DamagedRecord, match=message):
            face.view("v")
        with pytest.raises(DamagedRecord, match=message):
            face.report("v", flow, callback(True, SECURED))
    finally:
        face.close()


def test_a_report_reads_the_tracker_s_own_write_back_without_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same version and text as written: rebuilt; json is not even asked."""
    face = Face("async", defensive(), MemoryStore(), Clock())
    try:
        flow = new_flow()
        face.token("v", flow, lambda: "a-token")
        tracker: AsyncActivationTracker = face.tracker

        def no_parse(_text: str) -> Any:
            raise AssertionError("parsed a record this tracker wrote and kept")

        monkeypatch.setattr("statemachine.tracking._faces.json.loads", no_parse)
        reply = face.report("v", flow, callback(True, SECURED))
        assert reply.accepted
        assert tracker._hints["v"][1] is not None
    finally:
        face.close()

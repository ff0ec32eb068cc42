"""The tracker's visitor record: one core plus what only the tracker needs.

A tracked visitor is a session's core (exported and restored by the core, in
the snapshot's form) and three fields of the tag-driven rules: the flow id
holding the visitor, when a silent flow's lease runs out, and the flows that
ended (so a stale tab's retry cannot start them again). This module is the
one home of that record and of its stored form; sessions never carry it.

Stored form (format 2)::

    {"format": 2, "flow_id": ..., "lease_until": ..., "ended_flows": [...],
     "session": <a session snapshot>}

Format 1 (one flat dict: the session snapshot with these three fields beside
its own) is still read, so visitors written before the change go on.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any, Final, NamedTuple, cast

from statemachine.engine import snapshots
from statemachine.engine._core import ActivationCore, CoreState
from statemachine.engine.snapshots import (
    MAX_ATTEMPTS,
    SNAPSHOT_HISTORY_LIMIT,
    SnapshotError,
    check_fields,
    json_number,
    show,
    time_field,
)
from statemachine.protocol.policy import MAX_BUDGET_TOKENS, ActivationPolicy

RECORD_FORMAT: Final = 2
"""The stored record's own format; the session inside carries the snapshot's."""

ENDED_FLOWS_LIMIT: Final = 8
"""Flow ids kept after their flow ended, so a stale tab's retry cannot start them again."""

FLOW_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a flow id may look like: the snippet draws 22 URL-safe characters."""

MINTED_LIMIT: Final = MAX_BUDGET_TOKENS
"""Mint times a record may hold: as many as the largest minting budget counts."""

_FIELDS: Final = frozenset({"format", "flow_id", "lease_until", "ended_flows", "session"})
_OPTIONAL_FIELDS: Final = frozenset({"minted"})
"""Written once a token was asked for; absent from records written before the budget."""


class VisitorRecord:
    """A core and the tracker's fields beside it: what one store key holds."""

    __slots__ = ("core", "ended_flows", "flow_id", "lease_until", "minted")

    def __init__(
        self,
        core: ActivationCore,
        flow_id: str | None = None,
        lease_until: float | None = None,
        ended_flows: list[str] | None = None,
        minted: list[float] | None = None,
    ) -> None:
        self.core = core
        self.flow_id = flow_id
        self.lease_until = lease_until
        self.ended_flows = ended_flows if ended_flows is not None else []
        self.minted = minted if minted is not None else []  # when tokens were asked for


def dump(record: VisitorRecord) -> dict[str, Any]:
    """The record's stored form (JSON-safe; the token appears only as its fingerprint)."""
    stored: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "flow_id": record.flow_id,
        "lease_until": record.lease_until,
        "ended_flows": record.ended_flows[-ENDED_FLOWS_LIMIT:],
        "session": snapshots.dump(record.core),
    }
    if record.minted:
        stored["minted"] = record.minted[-MINTED_LIMIT:]
    return stored


def dump_text(record: VisitorRecord) -> str:
    """``dump(record)`` as compact JSON text, written directly (see ``snapshots.dump_text``).

    The text ``json.dumps(dump(record), separators=(",", ":"))`` gives, at a
    third of its cost: every step of a tracked visitor writes it.
    """
    flow_id, minted, ended_flows = record.flow_id, record.minted, record.ended_flows
    ended = (
        ",".join([encode_basestring_ascii(f) for f in ended_flows[-ENDED_FLOWS_LIMIT:]])
        if ended_flows
        else ""
    )
    tail = (
        f',"minted":[{",".join([json_number(at) for at in minted[-MINTED_LIMIT:]])}]}}'
        if minted
        else "}"
    )
    return (
        f'{{"format":{RECORD_FORMAT},'
        f'"flow_id":{"null" if flow_id is None else encode_basestring_ascii(flow_id)},'
        f'"lease_until":{json_number(record.lease_until)},"ended_flows":[{ended}],'
        f'"session":{snapshots.dump_text(record.core)}{tail}'
    )


def load(
    data: object, policy: ActivationPolicy, clock: Callable[[], float] = time.time
) -> VisitorRecord:
    """Check every field of ``data`` (format 2 or 1), then build the record.

    Raises ``SnapshotError`` naming the first bad field; nothing is half-built.
    """
    version = snapshots.format_of(data)
    data = cast(Mapping[str, Any], data)
    if version == 1:  # the session's fields and ours, side by side
        saved = snapshots.read(data, version)
    else:
        check_fields(data, _FIELDS if "minted" not in data else _FIELDS | _OPTIONAL_FIELDS)
        saved = snapshots.read(data["session"])
    flow_id = data.get("flow_id")
    if flow_id is not None and not (isinstance(flow_id, str) and FLOW_ID.fullmatch(flow_id)):
        raise SnapshotError("flow_id", f"must match {FLOW_ID.pattern}, got {show(flow_id)}")
    lease = data.get("lease_until")
    lease_until = None if lease is None else time_field(lease, "lease_until")
    ended = data.get("ended_flows")
    if not isinstance(ended, list) or len(ended) > ENDED_FLOWS_LIMIT:
        raise SnapshotError(
            "ended_flows", f"must be a list of at most {ENDED_FLOWS_LIMIT} flow ids"
        )
    for flow_text in ended:
        if not isinstance(flow_text, str) or not FLOW_ID.fullmatch(flow_text):
            raise SnapshotError("ended_flows", f"not a flow id: {show(flow_text)}")
    minted = data.get("minted", [])
    if not isinstance(minted, list) or len(minted) > MINTED_LIMIT:
        raise SnapshotError("minted", f"must be a list of at most {MINTED_LIMIT} times")
    times = [time_field(at, "minted") for at in minted]
    core = ActivationCore.restore(saved, policy, clock)
    return VisitorRecord(core, flow_id, lease_until, list(ended), times)


class Saved(NamedTuple):
    """A record as its stored form reads back: what ``load`` would build from its text.

    A tracker keeps one beside the text it last wrote for a visitor; when the
    store answers with that very text (same version, same bytes), the record
    is rebuilt from this instead of parsing and checking what the tracker
    wrote itself. Immutable: the record it came from goes on changing.
    """

    core: CoreState
    flow_id: str | None
    lease_until: float | None
    ended_flows: tuple[str, ...]
    minted: tuple[float, ...]


def saved(record: VisitorRecord) -> Saved:
    """What the stored form keeps of ``record``, as it stands now (``rebuild`` reads it back)."""
    return Saved(
        record.core.export(SNAPSHOT_HISTORY_LIMIT),
        record.flow_id,
        record.lease_until,
        tuple(record.ended_flows[-ENDED_FLOWS_LIMIT:]),
        tuple(record.minted[-MINTED_LIMIT:]),
    )


def rebuild(
    saved: Saved, policy: ActivationPolicy, clock: Callable[[], float] = time.time
) -> VisitorRecord | None:
    """What ``load(json.loads(dump_text(record)))`` gives back, built from ``saved(record)``.

    A fresh record each time (a step changes the record it is given). ``None``
    when some value would not read back as it is (a time that is not a
    finite, non-negative float, from a clock counting in integers, say): the
    text is parsed then, as any other.
    """
    core, lease = saved.core, saved.lease_until
    if not (
        _exact(core.since)
        and (core.flow_started_at is None or _exact(core.flow_started_at))
        and (lease is None or _exact(lease))
        and 0 <= core.attempts <= MAX_ATTEMPTS
        and (core.flow is not None or not core.state.in_flight)
        and all(_exact(at) for at in saved.minted)
        and all(_exact(entry.at) and 0 <= entry.attempt <= MAX_ATTEMPTS for entry in core.history)
    ):
        return None
    restored = ActivationCore.restore(core, policy, clock)
    return VisitorRecord(
        restored, saved.flow_id, lease, list(saved.ended_flows), list(saved.minted)
    )


def _exact(value: object) -> bool:
    """A time the stored form reads back unchanged (``snapshots.time_field`` takes it as is)."""
    return type(value) is float and 0.0 <= value < math.inf

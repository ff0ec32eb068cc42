"""Snapshots: a session's or a tracked visitor's state as a small, JSON-safe dict.

A snapshot is what survives a process: it is handed to other workers and read
back after a restart (the tracker's record carries one). It is the core's own
export (``ActivationCore.export``/``restore``) in JSON-safe form, so it holds
only what the table needs to go on (state, flow, attempts, reason, a capped
history, timestamps) and never a credential: the token is represented by its
fingerprint. Reading one is all-or-nothing: every field is checked before a
core is built, so a damaged snapshot is refused whole, never half-restored.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any, Final, cast

from statemachine.engine._core import ActivationCore, CoreState
from statemachine.engine._machine import STATE_OF, TRIGGER_OF
from statemachine.protocol.policy import ActivationPolicy
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.results import HistoryEntry
from statemachine.protocol.states import IN_FLIGHT, State, Trigger

SNAPSHOT_FORMAT: Final = 2
"""Bumped whenever a field changes meaning; older readers refuse newer snapshots.

Format 1 also carried three tracker fields (``flow_id``, ``lease_until``,
``ended_flows``), empty in every session's snapshot; they now live in the
tracker's own record. Format 1 is still read.
"""

READABLE_FORMATS: Final = (1, SNAPSHOT_FORMAT)

SNAPSHOT_HISTORY_LIMIT: Final = 32
"""A snapshot carries the newest entries only: it is written on every tracked event."""

MAX_ATTEMPTS: Final = 1_000
"""Far above any retry budget a policy accepts; a larger count is damage, not data."""

_FIELDS: Final = frozenset(
    {
        "format",
        "session_id",
        "policy",
        "state",
        "flow",
        "attempts",
        "reason",
        "token_fingerprint",
        "since",
        "flow_started_at",
        "history",
    }
)
LEGACY_TRACKER_FIELDS: Final = ("flow_id", "lease_until", "ended_flows")
"""Format 1's tracker fields: required there, read (and checked) by the tracker's record."""

_FIELDS_V1: Final = _FIELDS | frozenset(LEGACY_TRACKER_FIELDS)
_FLOWS: Final = {t.value: t for t in (Trigger.ACTIVATE, Trigger.ACTIVATE_ANONYMOUSLY)}
_REASONS: Final = FailureReason.__members__
_FINGERPRINT: Final = re.compile(r"sha256:[0-9a-f]{16}")
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class SnapshotError(ValueError):
    """A snapshot that cannot be restored; ``field`` names the first bad part."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid snapshot: {field}: {problem}")
        self.field = field
        self.problem = problem


def dump(core: ActivationCore) -> dict[str, Any]:
    """The snapshot of ``core``: what it exports, in JSON-safe form."""
    saved = core.export(SNAPSHOT_HISTORY_LIMIT)
    return {
        "format": SNAPSHOT_FORMAT,
        "session_id": saved.session_id,
        "policy": str(core.policy.name),
        "state": saved.state._value_,
        "flow": None if saved.flow is None else saved.flow._value_,
        "attempts": saved.attempts,
        "reason": None if saved.reason is None else saved.reason._name_,
        "token_fingerprint": saved.token_fingerprint,
        "since": saved.since,
        "flow_started_at": saved.flow_started_at,
        "history": HistoryEntry.lists(saved.history),
    }


def dump_text(core: ActivationCore) -> str:
    """``dump(core)`` as compact JSON text (what ``json.dumps`` with ``(",", ":")`` writes).

    A tracked visitor's snapshot is written on every step, twice per token
    request: walking a dict built only to be walked by the generic encoder
    cost more than the rest of the step. This writes the same fields, in the
    same order, to the same text (tests hold it to ``json.dumps(dump(core))``):
    names of states, triggers and reasons are plain identifiers (checked at
    import), other strings go through ``json``'s own escaping, numbers
    through ``json_number``.
    """
    flow, reason, history = core.flow, core.reason, core._history
    entries = ",".join(
        [
            f'["{s._value_}","{d._value_}","{t._value_}",{json_int(attempt)},'
            f"{'null' if r is None else _QUOTED_REASON[r._name_]},{json_number(at)}]"
            for s, d, t, attempt, r, at in history[-SNAPSHOT_HISTORY_LIMIT:]
        ]
        if history
        else ()
    )
    fingerprint = core.token_fingerprint
    return (
        f'{{"format":{SNAPSHOT_FORMAT},"session_id":{encode_basestring_ascii(core.session_id)},'
        f'"policy":{encode_basestring_ascii(core._policy_name)},'
        f'"state":"{core._fsm_state}","flow":{"null" if flow is None else _quoted(flow._value_)},'
        f'"attempts":{json_int(core.attempts)},'
        f'"reason":{"null" if reason is None else _QUOTED_REASON[reason._name_]},'
        f'"token_fingerprint":'
        f"{'null' if fingerprint is None else encode_basestring_ascii(fingerprint)},"
        f'"since":{json_number(core.since)},"flow_started_at":{json_number(core.flow_started_at)},'
        f'"history":[{entries}]}}'
    )


def json_number(value: object) -> str:
    """``value`` as ``json.dumps`` writes it: a finite float by its ``repr``, anything else by
    ``json`` itself (``None``, integers, ``NaN``, ``Infinity``), so the text is the same.

    A float's shortest ``repr`` is most of the cost of a record's text, and the
    same times come back on every write of a visitor (its history, when its
    flow started, its mint times): positive ones are remembered (``FLOAT_TEXTS``
    of them at most, then forgotten all at once).
    """
    if value is None:
        return "null"
    if type(value) is float:
        text = _FLOAT_TEXT.get(value)
        if text is not None:
            return text
        if 0.0 < value < math.inf:  # not 0.0, which -0.0 would find, nor NaN or infinities
            if len(_FLOAT_TEXT) >= FLOAT_TEXTS:
                _FLOAT_TEXT.clear()
            text = _FLOAT_TEXT[value] = float.__repr__(value)
            return text
        if value - value == 0.0:
            return float.__repr__(value)
    return _ENCODE(value)


def json_int(value: object) -> str:
    """An integer field (``attempts``) as ``json.dumps`` writes it."""
    return int.__repr__(value) if type(value) is int else _ENCODE(value)


def _quoted(name: str) -> str:
    return f'"{name}"'


FLOAT_TEXTS: Final = 4_096
"""Float texts ``json_number`` remembers: a few hundred visitors' recent times."""

_FLOAT_TEXT: dict[float, str] = {}
_ENCODE: Final = json.JSONEncoder(separators=(",", ":")).encode
_QUOTED_REASON: Final = {name: _quoted(name) for name in FailureReason.__members__}
if any(
    encode_basestring_ascii(name) != _quoted(name)
    for name in (*_QUOTED_REASON, *(s.value for s in State), *(t.value for t in Trigger))
):  # pragma: no cover - a name that needs escaping must go through encode_basestring_ascii
    raise RuntimeError("dump_text writes names as they are: they must need no JSON escaping")


def load(
    data: object, policy: ActivationPolicy, clock: Callable[[], float] = time.time
) -> ActivationCore:
    """Check every field of ``data``, then build the core; raise ``SnapshotError`` otherwise."""
    return ActivationCore.restore(read(data), policy, clock)


def format_of(data: object) -> int:
    """The snapshot's format, once it is known to be one this version reads."""
    if type(data) is not dict and not isinstance(data, Mapping):
        raise SnapshotError("snapshot", f"must be a mapping, got {type(data).__name__}")
    version = data.get("format")
    if type(version) is not int:
        raise SnapshotError("format", f"must be an integer, got {type(version).__name__}")
    if version not in READABLE_FORMATS:
        raise SnapshotError(
            "format", f"unsupported version {version} (this version reads {SNAPSHOT_FORMAT})"
        )
    return version


def read(data: object, version: int | None = None) -> CoreState:
    """The core state ``data`` holds, every field checked; ``SnapshotError`` otherwise.

    A format-1 snapshot's tracker fields must be there; what they hold is the
    tracker record's to check (``records``), not a session's. ``version``: the
    format a caller has checked already.
    """
    if version is None or type(data) is not dict:
        version = format_of(data)
    data = cast(Mapping[str, Any], data)
    check_fields(data, _FIELDS if version == SNAPSHOT_FORMAT else _FIELDS_V1)

    session_id = text_field(data, "session_id", _SESSION_ID)
    state = _choice(data["state"], "state", STATE_OF)
    flow_name = data["flow"]
    if flow_name is not None and (type(flow_name) is not str or flow_name not in _FLOWS):
        raise SnapshotError(
            "flow", f"must be null, 'activate' or 'activate_anonymously', got {show(flow_name)}"
        )
    flow = None if flow_name is None else _FLOWS[flow_name]
    if state in IN_FLIGHT and flow is None:
        raise SnapshotError("flow", f"a snapshot in state {state.value!r} must name its flow")
    attempts = _count(data["attempts"], "attempts")
    reason = _reason(data["reason"], "reason")
    fingerprint = data["token_fingerprint"]
    if fingerprint is not None and not (
        isinstance(fingerprint, str) and _FINGERPRINT.fullmatch(fingerprint)
    ):
        raise SnapshotError("token_fingerprint", "must be null or 'sha256:' and 16 hex digits")
    since = time_field(data["since"], "since")
    started = data["flow_started_at"]
    flow_started_at = None if started is None else time_field(started, "flow_started_at")
    history = _history(data["history"])
    return CoreState(
        session_id, state, flow, attempts, reason, fingerprint, since, flow_started_at, history
    )


def check_fields(data: Mapping[str, Any], fields: frozenset[str]) -> None:
    """Every field of ``fields`` is there, and no other: name the first that is not."""
    if data.keys() == fields:
        return
    missing = fields - data.keys()
    if missing:
        raise SnapshotError(min(missing), "missing")
    unknown = [str(k) for k in data if k not in fields]
    raise SnapshotError(min(unknown)[:40], "unknown field")


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def text_field(data: Mapping[str, Any], field: str, pattern: re.Pattern[str]) -> str:
    value = data[field]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise SnapshotError(field, f"must match {pattern.pattern}, got {show(value)}")
    return value


def _choice(value: object, field: str, choices: Mapping[str, Any]) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise SnapshotError(field, f"unknown value {show(value)}")
    return choices[value]


def _count(value: object, field: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ATTEMPTS:
        raise SnapshotError(
            field, f"must be an integer from 0 to {MAX_ATTEMPTS}, got {show(value)}"
        )
    return value


def _reason(value: object, field: str) -> FailureReason | None:
    if value is None:
        return None
    member = FailureReason.__members__.get(value) if isinstance(value, str) else None
    if member is None:
        raise SnapshotError(field, f"unknown failure reason {show(value)}")
    return member


def time_field(value: object, field: str) -> float:
    if type(value) is not int and type(value) is not float:
        raise SnapshotError(field, f"must be a number, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer past any float (JSON text may hold one)
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise SnapshotError(field, f"must be a finite, non-negative number, got {show(value)}")
    return number


def _history(value: object) -> tuple[HistoryEntry, ...]:
    if not isinstance(value, list) or len(value) > SNAPSHOT_HISTORY_LIMIT:
        raise SnapshotError(
            "history", f"must be a list of at most {SNAPSHOT_HISTORY_LIMIT} entries"
        )
    return tuple(
        _plain_entry(item) or _entry(item, f"history[{index}]") for index, item in enumerate(value)
    )


def _plain_entry(item: object) -> HistoryEntry | None:
    """The entry a well-formed ``item`` holds, checked on exact JSON types; None otherwise.

    Every tracked request reads a visitor's whole history: this is the fast
    path, dictionary look-ups without a call per field. Anything it does not
    take (damage, or numbers and strings of other types) goes through ``_entry``,
    which accepts the same values and names the problem.
    """
    if type(item) is not list or len(item) != 6:
        return None
    source, dest, trigger, attempt, reason, at = item
    if type(source) is not str or type(dest) is not str or type(trigger) is not str:
        return None
    if type(attempt) is not int or not 0 <= attempt <= MAX_ATTEMPTS:
        return None
    if type(at) is not float or not 0.0 <= at < math.inf:
        return None
    if reason is not None:
        reason = _REASONS.get(reason) if type(reason) is str else None
        if reason is None:
            return None
    source, dest, trigger = STATE_OF.get(source), STATE_OF.get(dest), TRIGGER_OF.get(trigger)
    if source is None or dest is None or trigger is None:
        return None
    return HistoryEntry(source, dest, trigger, attempt, reason, at)


def _entry(item: object, field: str) -> HistoryEntry:
    if not isinstance(item, list) or len(item) != 6:
        raise SnapshotError(field, "must be [source, dest, trigger, attempt, reason, at]")
    source, dest, trigger, attempt, reason, at = item
    return HistoryEntry(
        _choice(source, field, STATE_OF),
        _choice(dest, field, STATE_OF),
        _choice(trigger, field, TRIGGER_OF),
        _count(attempt, field),
        _reason(reason, field),
        time_field(at, field),
    )

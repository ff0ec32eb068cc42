"""Snapshots: a session's or a tracked visitor's state as a small, JSON-safe dict.

A snapshot is what survives a process: it is written to stores, handed to
other workers and read back after a restart. It therefore holds only what the
table needs to go on (state, flow, attempts, reason, a capped history,
timestamps) and never a credential: the token is represented by its
fingerprint. Reading one is all-or-nothing: every field is checked before a
core is built, so a damaged snapshot is refused whole, never half-restored.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from statemachine.core import ActivationCore
from statemachine.policy import ActivationPolicy
from statemachine.reasons import FailureReason
from statemachine.states import IN_FLIGHT, State, Trigger

SNAPSHOT_FORMAT: Final = 1
"""Bumped whenever a field changes meaning; older readers refuse newer snapshots."""

ENDED_FLOWS_LIMIT: Final = 8
"""Flow ids kept after their flow ended, so a stale tab's retry cannot start them again."""

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
        "flow_id",
        "attempts",
        "reason",
        "token_fingerprint",
        "since",
        "flow_started_at",
        "lease_until",
        "ended_flows",
        "history",
    }
)
MINTED_LIMIT: Final = 1_000
"""Mint times a tracked visitor's record may hold: a budget's tokens are capped the same."""
_OPTIONAL_FIELDS: Final = frozenset({"minted"})
"""Written only by the tracker, and absent from records written before it was."""
_STATES: Final = {s.value: s for s in State}
_TRIGGERS: Final = {t.value: t for t in Trigger}
_FLOWS: Final = {t.value: t for t in (Trigger.ACTIVATE, Trigger.ACTIVATE_ANONYMOUSLY)}
_FINGERPRINT: Final = re.compile(r"sha256:[0-9a-f]{16}")
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
FLOW_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a flow id may look like: the snippet draws 22 URL-safe characters."""


class SnapshotError(ValueError):
    """A snapshot that cannot be restored; ``field`` names the first bad part."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid snapshot: {field}: {problem}")
        self.field = field
        self.problem = problem


def dump(
    core: ActivationCore,
    *,
    flow_id: str | None = None,
    lease_until: float | None = None,
    ended_flows: list[str] | None = None,
    minted: list[float] | None = None,
) -> dict[str, Any]:
    """The snapshot of ``core``; ``flow_id``, ``lease_until`` and ``minted`` are the tracker's."""
    history = core._history or ()
    snapshot = {
        "format": SNAPSHOT_FORMAT,
        "session_id": core.session_id,
        "policy": str(core.policy.name),
        "state": core._fsm_state,
        "flow": None if core.flow is None else core.flow.value,
        "flow_id": flow_id,
        "attempts": core.attempts,
        "reason": None if core.reason is None else core.reason.name,
        "token_fingerprint": core.token_fingerprint,
        "since": core.since,
        "flow_started_at": core.flow_started_at,
        "lease_until": lease_until,
        "ended_flows": list(ended_flows or ())[-ENDED_FLOWS_LIMIT:],
        "history": [
            [source, dest, trigger.value, attempt, None if reason is None else reason.name, at]
            for source, dest, trigger, attempt, reason, at in history[-SNAPSHOT_HISTORY_LIMIT:]
        ],
    }
    if minted:
        snapshot["minted"] = minted[-MINTED_LIMIT:]
    return snapshot


class Restored:
    """A core rebuilt from a snapshot, with the tracker's fields beside it."""

    __slots__ = ("core", "ended_flows", "flow_id", "lease_until", "minted")

    def __init__(
        self,
        core: ActivationCore,
        flow_id: str | None,
        lease_until: float | None,
        ended_flows: list[str] | None = None,
        minted: list[float] | None = None,
    ) -> None:
        self.core = core
        self.flow_id = flow_id
        self.lease_until = lease_until
        self.ended_flows = ended_flows if ended_flows is not None else []
        self.minted = minted if minted is not None else []  # when tokens were asked for


def load(
    data: object, policy: ActivationPolicy, clock: Callable[[], float] = time.time
) -> Restored:
    """Check every field of ``data``, then build the core; raise ``SnapshotError`` otherwise."""
    if not isinstance(data, Mapping):
        raise SnapshotError("snapshot", f"must be a mapping, got {type(data).__name__}")
    version = data.get("format")
    if type(version) is not int:
        raise SnapshotError("format", f"must be an integer, got {type(version).__name__}")
    if version != SNAPSHOT_FORMAT:
        raise SnapshotError(
            "format", f"unsupported version {version} (this version reads {SNAPSHOT_FORMAT})"
        )
    missing = _FIELDS - data.keys()
    if missing:
        raise SnapshotError(min(missing), "missing")
    unknown = [str(k) for k in data if k not in _FIELDS and k not in _OPTIONAL_FIELDS]
    if unknown:
        raise SnapshotError(min(unknown)[:40], "unknown field")

    session_id = _text(data, "session_id", _SESSION_ID)
    state = _choice(data["state"], "state", _STATES)
    flow_name = data["flow"]
    if flow_name is not None and flow_name not in _FLOWS:
        raise SnapshotError(
            "flow", f"must be null, 'activate' or 'activate_anonymously', got {_show(flow_name)}"
        )
    flow = None if flow_name is None else _FLOWS[flow_name]
    if state in IN_FLIGHT and flow is None:
        raise SnapshotError("flow", f"a snapshot in state {state.value!r} must name its flow")
    flow_id = None if data["flow_id"] is None else _text(data, "flow_id", FLOW_ID)
    attempts = _count(data["attempts"], "attempts")
    reason = _reason(data["reason"], "reason")
    fingerprint = data["token_fingerprint"]
    if fingerprint is not None and not (
        isinstance(fingerprint, str) and _FINGERPRINT.fullmatch(fingerprint)
    ):
        raise SnapshotError("token_fingerprint", "must be null or 'sha256:' and 16 hex digits")
    since = _time(data["since"], "since")
    started = data["flow_started_at"]
    flow_started_at = None if started is None else _time(started, "flow_started_at")
    lease_until = None if data["lease_until"] is None else _time(data["lease_until"], "lease_until")
    ended = data["ended_flows"]
    if not isinstance(ended, list) or len(ended) > ENDED_FLOWS_LIMIT:
        raise SnapshotError(
            "ended_flows", f"must be a list of at most {ENDED_FLOWS_LIMIT} flow ids"
        )
    for flow_text in ended:
        if not isinstance(flow_text, str) or not FLOW_ID.fullmatch(flow_text):
            raise SnapshotError("ended_flows", f"not a flow id: {_show(flow_text)}")
    history = _history(data["history"])
    minted = data.get("minted", [])
    if not isinstance(minted, list) or len(minted) > MINTED_LIMIT:
        raise SnapshotError("minted", f"must be a list of at most {MINTED_LIMIT} times")
    minted = [_time(at, "minted") for at in minted]

    core = ActivationCore(policy, session_id, clock)
    core._fsm_state = state.value
    core.flow = flow
    core.attempts = attempts
    core.reason = reason
    core._fingerprint = fingerprint
    core.since = since
    core.flow_started_at = flow_started_at
    core._history = history or None
    return Restored(core, flow_id, lease_until, list(ended), minted)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(data: Mapping[str, Any], field: str, pattern: re.Pattern[str]) -> str:
    value = data[field]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise SnapshotError(field, f"must match {pattern.pattern}, got {_show(value)}")
    return value


def _choice(value: object, field: str, choices: Mapping[str, Any]) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise SnapshotError(field, f"unknown value {_show(value)}")
    return choices[value]


def _count(value: object, field: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ATTEMPTS:
        raise SnapshotError(
            field, f"must be an integer from 0 to {MAX_ATTEMPTS}, got {_show(value)}"
        )
    return value


def _reason(value: object, field: str) -> FailureReason | None:
    if value is None:
        return None
    member = FailureReason.__members__.get(value) if isinstance(value, str) else None
    if member is None:
        raise SnapshotError(field, f"unknown failure reason {_show(value)}")
    return member


def _time(value: object, field: str) -> float:
    if type(value) is not int and type(value) is not float:
        raise SnapshotError(field, f"must be a number, got {_show(value)}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise SnapshotError(field, f"must be a finite, non-negative number, got {_show(value)}")
    return number


def _history(value: object) -> list[Any]:
    if not isinstance(value, list) or len(value) > SNAPSHOT_HISTORY_LIMIT:
        raise SnapshotError(
            "history", f"must be a list of at most {SNAPSHOT_HISTORY_LIMIT} entries"
        )
    entries = []
    for index, item in enumerate(value):
        field = f"history[{index}]"
        if not isinstance(item, list) or len(item) != 6:
            raise SnapshotError(field, "must be [source, dest, trigger, attempt, reason, at]")
        source, dest, trigger, attempt, reason, at = item
        entries.append(
            (
                _choice(source, field, _STATES).value,
                _choice(dest, field, _STATES).value,
                _choice(trigger, field, _TRIGGERS),
                _count(attempt, field),
                _reason(reason, field),
                _time(at, field),
            )
        )
    return entries

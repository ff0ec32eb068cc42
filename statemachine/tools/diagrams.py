"""State diagrams drawn from the transition table, per policy profile.

Mermaid and DOT are plain text built here, deterministic to the byte, so the
committed files in ``diagrams/`` can be compared with what the code draws.
SVG is DOT rendered by Graphviz's ``dot`` program; each SVG carries the hash
of its DOT source, so staleness is checkable without Graphviz installed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from statemachine.protocol.policy import (
    ANONYMOUS_PROFILE,
    DEFENSIVE_PROFILE,
    ActivationPolicy,
    Profile,
)
from statemachine.protocol.results import HistoryEntry
from statemachine.protocol.states import IN_FLIGHT, State, Trigger
from statemachine.protocol.table import STATE_MEANINGS, Row, rows_for

PROFILES: Final = {"defensive": DEFENSIVE_PROFILE, "anonymous": ANONYMOUS_PROFILE}
FORMATS: Final = ("mermaid", "dot", "svg")
EXTENSIONS: Final = {"mermaid": "mmd", "dot": "dot", "svg": "svg"}
SVG_SOURCE_MARK: Final = "<!-- dot-source-sha256: "


class DiagramError(Exception):
    """A diagram cannot be produced here; the message says what to install or fix."""


def edge_label(row: Row, rows: Sequence[Row]) -> str:
    """Trigger plus guard; an unguarded row after a guarded one of its group reads ``[else]``."""
    if row.guard is not None:
        return f"{row.trigger.value} [{row.guard.label}]"
    siblings = [r for r in rows if r.source == row.source and r.trigger == row.trigger]
    if siblings.index(row) > 0:
        return f"{row.trigger.value} [else]"
    return row.trigger.value


def _title(profile: Profile) -> str:
    return (
        f"policy: token failure -> {profile.on_token_failure.value}, "
        f"activation failure -> {profile.on_activation_failure.value}"
    )


def mermaid(
    profile: Profile, *, current: State | None = None, visited: Iterable[State] = ()
) -> str:
    rows = rows_for(profile)
    used = {r.source for r in rows} | {r.dest for r in rows}
    lines = [
        "---",
        f"title: secured activation ({_title(profile)})",
        "---",
        "stateDiagram-v2",
        f"    [*] --> {State.UNAUTHENTICATED.value}",
    ]
    lines += [f"    {s.value}: {s.value}" for s in State if s in used]
    lines += [f"    {r.source.value} --> {r.dest.value}: {edge_label(r, rows)}" for r in rows]
    lines.append("    classDef inflight fill:#fff4d6,stroke:#b58900")
    in_flight = ",".join(s.value for s in State if s in IN_FLIGHT and s in used)
    lines.append(f"    class {in_flight} inflight")
    visited_set = [s.value for s in State if s in set(visited) and s is not current]
    if visited_set:
        lines.append("    classDef visited fill:#dbeafe,stroke:#1d4ed8")
        lines.append(f"    class {','.join(visited_set)} visited")
    if current is not None:
        lines.append("    classDef current fill:#bbf7d0,stroke:#15803d,stroke-width:3px")
        lines.append(f"    class {current.value} current")
    return "\n".join(lines) + "\n"


def dot(profile: Profile) -> str:
    rows = rows_for(profile)
    lines = [
        "digraph secured_activation {",
        f'    label="secured activation ({_title(profile)})";',
        "    labelloc=t;",
        "    rankdir=LR;",
        '    node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        '    start [shape=point, label=""];',
    ]
    for state in State:
        fill = "#fff4d6" if state in IN_FLIGHT else "#e8f5e9"
        tooltip = STATE_MEANINGS[state].replace('"', "'")
        lines.append(f'    {state.value} [fillcolor="{fill}", tooltip="{tooltip}"];')
    lines.append(f"    start -> {State.UNAUTHENTICATED.value};")
    for row in rows:
        label = edge_label(row, rows).replace('"', "'")
        tooltip = row.why.replace('"', "'")
        style = _edge_style(row)
        lines.append(
            f"    {row.source.value} -> {row.dest.value} "
            f'[label="{label}", tooltip="{tooltip}"{style}];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _edge_style(row: Row) -> str:
    """Quiet the housekeeping edges, colour the ones a policy decides, dot the tracker's."""
    style = _edge_colour(row)
    if row.tracker_only and "dashed" not in style:
        style += ", style=dotted"
    return style


def _edge_colour(row: Row) -> str:
    if row.trigger in (Trigger.CANCEL, Trigger.LOGOUT, Trigger.LEASE_EXPIRED):
        return ', style=dashed, color="#9e9e9e", fontcolor="#757575"'
    if row.branch is not None and row.dest is State.ACTIVATING_ANONYMOUS:
        return ', color="#e65100", fontcolor="#e65100", penwidth=1.6'
    if row.branch is not None and row.dest is State.BLOCKED:
        return ', color="#b71c1c", fontcolor="#b71c1c", penwidth=1.6'
    if row.dest is State.RETRYING or row.trigger is Trigger.BACKOFF_ELAPSED:
        return ', color="#1565c0", fontcolor="#1565c0"'
    return ""


def svg(profile: Profile) -> str:
    source = dot(profile)
    program = shutil.which("dot")
    if program is None:
        raise DiagramError(
            "SVG output needs Graphviz's 'dot' program, which is not installed "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz). "
            "Mermaid and DOT output need nothing."
        )
    done = subprocess.run(  # noqa: S603 - fixed program found on PATH, our own input
        [program, "-Tsvg"], input=source, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise DiagramError(f"dot failed: {done.stderr.strip()[:200]}")
    mark = f"{SVG_SOURCE_MARK}{source_hash(source)} -->\n"
    head, newline, rest = done.stdout.partition("\n")
    if head.startswith("<?xml"):  # the XML declaration must stay first
        return f"{head}{newline}{mark}{rest}"
    return mark + done.stdout


def svg_source_hash(svg_text: str) -> str | None:
    """The DOT-source hash an SVG of ours records, or None if it has none."""
    start = svg_text.find(SVG_SOURCE_MARK)
    if start < 0:
        return None
    end = svg_text.find(" -->", start)
    return svg_text[start + len(SVG_SOURCE_MARK) : end]


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def render(policy: str, fmt: str) -> str:
    if policy not in PROFILES:
        raise DiagramError(f"unknown policy {policy!r} (choose from: {', '.join(PROFILES)})")
    profile = PROFILES[policy]
    if fmt == "mermaid":
        return mermaid(profile)
    if fmt == "dot":
        return dot(profile)
    if fmt == "svg":
        return svg(profile)
    raise DiagramError(f"unknown format {fmt!r} (choose from: {', '.join(FORMATS)})")


def write_all(directory: Path, *, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Regenerate every committed diagram; this is what ``diagrams/`` must equal."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for policy in PROFILES:
        for fmt in formats:
            path = directory / f"{policy}.{EXTENSIONS[fmt]}"
            path.write_text(render(policy, fmt), encoding="utf-8")
            written.append(path)
    return written


def session_mermaid(
    policy: ActivationPolicy, current: State, history: Sequence[HistoryEntry]
) -> str:
    """A live session's drawing: its current state and every state its history went through."""
    visited = {e.source for e in history} | {e.dest for e in history}
    return mermaid(Profile.of(policy), current=current, visited=visited)

"""The machine as SVG, drawn from the table, for the inspector (no Graphviz, no script).

States sit on a fixed grid; every row of the policy's table is an edge
(rows between the same two states share one, their triggers joined), so the
drawing cannot show an edge the table lacks, and every edge is labelled with
its triggers. The current state is filled in the colour of what it means for
the visitor — authenticated green, blocked red, in flight amber, anonymous and
unauthenticated neutral — so a support person reads the outcome at a glance;
visited states and the edges a visitor took are emphasised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape
from typing import Final, NamedTuple

from statemachine.protocol.policy import Profile
from statemachine.protocol.states import IN_FLIGHT, State
from statemachine.protocol.table import rows_for

POSITIONS: Final = {
    State.UNAUTHENTICATED: (100, 240),
    State.FETCHING_TOKEN: (380, 90),
    State.ACTIVATING: (670, 90),
    State.RETRYING: (670, 240),
    State.AUTHENTICATED: (970, 90),
    State.ACTIVATING_ANONYMOUS: (380, 400),
    State.ANONYMOUS: (670, 400),
    State.BLOCKED: (970, 400),
}
WIDTH, HEIGHT = 1080, 470
BOX_W, BOX_H = 164, 40


class Colours(NamedTuple):
    fill: str
    stroke: str
    ink: str


def kind_of(state: State) -> str:
    """What a state means for the visitor, which decides its colour."""
    if state in IN_FLIGHT:
        return "in-flight"
    return state.value


CURRENT: Final = {
    "authenticated": Colours("#2e7d32", "#1b5e20", "#ffffff"),
    "blocked": Colours("#c62828", "#8e0000", "#ffffff"),
    "in-flight": Colours("#ffb300", "#c68400", "#263238"),
    "anonymous": Colours("#78909c", "#455a64", "#ffffff"),
    "unauthenticated": Colours("#cfd8dc", "#455a64", "#263238"),
}
"""The current state's colours, by what it means: the inspector's legend uses the same."""

RESTING: Final = {
    "authenticated": Colours("#e8f5e9", "#81c784", "#1b5e20"),
    "blocked": Colours("#ffebee", "#e57373", "#8e0000"),
    "in-flight": Colours("#fff8e1", "#ffd54f", "#5d4037"),
    "anonymous": Colours("#eceff1", "#90a4ae", "#37474f"),
    "unauthenticated": Colours("#fafafa", "#90a4ae", "#37474f"),
}


def _edge_end(source: tuple[int, int], dest: tuple[int, int]) -> tuple[float, float, float, float]:
    """Clip the line between two box centres to the boxes' borders."""
    (x1, y1), (x2, y2) = source, dest
    dx, dy = x2 - x1, y2 - y1
    length = math.hypot(dx, dy) or 1.0
    scale_out = min(
        BOX_W / 2 / abs(dx) if dx else math.inf, BOX_H / 2 / abs(dy) if dy else math.inf
    )
    start = (x1 + dx * scale_out, y1 + dy * scale_out)
    end = (x2 - dx * scale_out, y2 - dy * scale_out)
    # Offset slightly so edges in both directions do not overlap.
    ox, oy = -dy / length * 6, dx / length * 6
    return start[0] + ox, start[1] + oy, end[0] + ox, end[1] + oy


def _crosses_a_box(
    start: tuple[float, float], end: tuple[float, float], ends: tuple[State, State]
) -> bool:
    for state, (x, y) in POSITIONS.items():
        if state in ends:
            continue
        for step in range(1, 40):
            px = start[0] + (end[0] - start[0]) * step / 40
            py = start[1] + (end[1] - start[1]) * step / 40
            if abs(px - x) <= BOX_W / 2 + 4 and abs(py - y) <= BOX_H / 2 + 4:
                return True
    return False


def diagram_svg(
    profile: Profile,
    current: State | None = None,
    visited: Iterable[State] = (),
    taken: Iterable[tuple[State, State]] = (),
) -> str:
    seen, used = set(visited), set(taken)
    edges: dict[tuple[State, State], list[str]] = {}
    for row in rows_for(profile):
        labels = edges.setdefault((row.source, row.dest), [])
        if row.trigger.value not in labels:
            labels.append(row.trigger.value)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="activation state machine">',
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#607d8b"/></marker>'
        '<marker id="arrow-taken" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#1565c0"/></marker>'
        "</defs>",
    ]
    labels_drawn: list[str] = []
    placed: list[tuple[float, float, float]] = []
    for (source, dest), labels in edges.items():
        text = escape(", ".join(labels))
        hot = (source, dest) in used
        colour, width = ("#1565c0", 2.6) if hot else ("#b0bec5", 1.2)
        marker = "arrow-taken" if hot else "arrow"
        if source is dest:
            x, y = POSITIONS[source]
            parts.append(
                f'<path class="edge{" taken" if hot else ""}" d="M{x - 30},{y - BOX_H / 2} '
                f'C{x - 40},{y - 75} {x + 40},{y - 75} {x + 30},{y - BOX_H / 2}" fill="none" '
                f'stroke="{colour}" stroke-width="{width}" marker-end="url(#{marker})">'
                f"<title>{text}</title></path>"
            )
            labels_drawn.append(_label(x, y - 66, text, hot, placed))
            continue
        x1, y1, x2, y2 = _edge_end(POSITIONS[source], POSITIONS[dest])
        # An edge that would cross another state bends around it.
        bend = 70 if _crosses_a_box((x1, y1), (x2, y2), (source, dest)) else 0
        length = math.hypot(x2 - x1, y2 - y1) or 1.0
        cx = (x1 + x2) / 2 + (y1 - y2) / length * bend
        cy = (y1 + y2) / 2 + (x2 - x1) / length * bend
        parts.append(
            f'<path class="edge{" taken" if hot else ""}" '
            f'd="M{x1:.0f},{y1:.0f} Q{cx:.0f},{cy:.0f} {x2:.0f},{y2:.0f}" fill="none" '
            f'stroke="{colour}" stroke-width="{width}" marker-end="url(#{marker})">'
            f"<title>{text}</title></path>"
        )
        # The curve's midpoint (t = 1/2 of the quadratic Bezier), moved off the line to
        # the side the edge is offset to, so edges in opposite directions part labels.
        mx, my = (x1 + 2 * cx + x2) / 4, (y1 + 2 * cy + y2) / 4
        nx, ny = (y1 - y2) / length, (x2 - x1) / length  # the side the edge is offset to
        labels_drawn.append(_label(mx - nx * 9, my - ny * 9, text, hot, placed))
    parts.extend(labels_drawn)
    for state, (x, y) in POSITIONS.items():
        kind = kind_of(state)
        fill, stroke, ink = CURRENT[kind] if state is current else RESTING[kind]
        border = 1.6
        if state is not current and state in seen:
            stroke, border = "#1565c0", 2.6  # on the visitor's path
        marked = " current" if state is current else (" visited" if state in seen else "")
        parts.append(
            f'<g class="state{marked}" data-state="{state.value}" data-kind="{kind}">'
            f'<rect x="{x - BOX_W / 2}" y="{y - BOX_H / 2}" width="{BOX_W}" height="{BOX_H}" '
            f'rx="9" fill="{fill}" stroke="{stroke}" stroke-width="{border}"/>'
            f'<text x="{x}" y="{y + 5}" text-anchor="middle" font-family="sans-serif" '
            f'font-size="14" fill="{ink}">{state.value}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _label(
    x: float, y: float, text: str, hot: bool, placed: list[tuple[float, float, float]]
) -> str:
    """An edge's triggers, on a white halo so crossing lines do not hide them.

    A label that would overlap one already placed, or a state's box, moves
    along its line a few steps until it is clear (or the steps run out).
    """
    half = len(text) * 2.8 + 3  # about half the width of 10px sans-serif text

    def clashes(cx: float, cy: float) -> bool:
        for px, py, other in placed:
            if abs(cx - px) < half + other and abs(cy - py) < 12:
                return True
        return any(
            abs(cx - bx) < half + BOX_W / 2 and abs(cy - by) < 6 + BOX_H / 2
            for bx, by in POSITIONS.values()
        )

    for dy in (0, 12, -12, 24, -24, 36, -36):
        if not clashes(x, y + dy):
            y += dy
            break
    placed.append((x, y, half))
    ink = "#0d47a1" if hot else "#546e7a"
    return (
        f'<text class="edge-label" x="{x:.0f}" y="{y + 3:.0f}" text-anchor="middle" '
        f'font-family="sans-serif" font-size="10" fill="{ink}" stroke="#ffffff" '
        f'stroke-width="3" paint-order="stroke">{text}</text>'
    )

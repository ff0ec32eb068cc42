"""The machine as SVG, drawn from the table, for the inspector (no Graphviz, no script).

States sit on a fixed grid; every row of the policy's table is an edge
(rows between the same two states share one, their triggers joined), so the
drawing cannot show an edge the table lacks. The current state is filled,
visited states and the edges a visitor took are emphasised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape
from typing import Final

from statemachine.policy import Profile
from statemachine.states import IN_FLIGHT, State
from statemachine.table import rows_for

POSITIONS: Final = {
    State.UNAUTHENTICATED: (110, 210),
    State.FETCHING_TOKEN: (350, 80),
    State.ACTIVATING: (600, 80),
    State.RETRYING: (600, 210),
    State.AUTHENTICATED: (850, 80),
    State.ACTIVATING_ANONYMOUS: (350, 340),
    State.ANONYMOUS: (600, 340),
    State.BLOCKED: (850, 340),
}
WIDTH, HEIGHT = 960, 420
BOX_W, BOX_H = 170, 40


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
    for state, (x, y) in POSITIONS.items():
        if state is current:
            fill, stroke = "#2e7d32", "#1b5e20"
            ink = "#ffffff"
        elif state in seen:
            fill, stroke, ink = "#e3f2fd", "#1565c0", "#0d47a1"
        else:
            fill, stroke, ink = (
                ("#fff8e1" if state in IN_FLIGHT else "#fafafa"),
                "#90a4ae",
                "#37474f",
            )
        marked = " current" if state is current else ""
        parts.append(
            f'<g class="state{marked}" data-state="{state.value}">'
            f'<rect x="{x - BOX_W / 2}" y="{y - BOX_H / 2}" width="{BOX_W}" height="{BOX_H}" '
            f'rx="9" fill="{fill}" stroke="{stroke}" stroke-width="1.6"/>'
            f'<text x="{x}" y="{y + 5}" text-anchor="middle" font-family="sans-serif" '
            f'font-size="14" fill="{ink}">{state.value}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)

"""The hosted path against its floor: one table of the rows the hosted path is judged by.

Built from the other sections' results of the same run (``bench/run.py``): each
row's measure, its floor measured in the same run, the goal, met or missed, and
for a miss the measurement that explains it. A row whose section was not run
says so.
"""

from __future__ import annotations

from typing import Any

from bench.common import us


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _tracker_rows(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return [
            "| `AsyncActivationTracker.token_request` on Redis, new visitor "
            "| not run | | ≤ 1.15x | |",
            "| `ActivationTracker.token_request` (plain provider) | not run | | ≤ 1.3x | |",
        ]
    floor = r["mint"] + 2 * r["rtt"]
    sequence = r.get("sequence")
    rows = []
    for key, name, goal in (
        ("tracked_async", "`AsyncActivationTracker.token_request` on Redis, new visitor", 1.15),
        ("tracked", "`ActivationTracker.token_request` (plain provider)", 1.3),
    ):
        ratio = r[key] / floor
        own = r[key] - floor
        why = "" if ratio <= goal else _tracker_why(r, key, own)
        in_sequence = (
            ""
            if sequence is None
            else f"; as one sequence (mint, then two PINGs, in one loop) {us(sequence)} → "
            f"{r[key] / sequence:.2f}x"
        )
        rows.append(
            f"| {name} | {us(r[key])} ({r[key] / r['mint']:.2f}x the mint) | mint "
            f"{us(r['mint'])} + 2 round trips x {us(r['rtt'])} = {us(floor)} → "
            f"**{_near(ratio, goal)}x the floor**{in_sequence} | ≤ {goal}x | "
            f"{_verdict(ratio <= goal)} {why} |"
        )
    return rows


def _tracker_why(r: dict[str, Any], key: str, own: float) -> str:
    """Where a missed tracker row's time beyond the floor goes, from this run's own rows."""
    parts = [f"{us(own)} beyond the mint and two round trips"]
    if "sequence" in r:
        parts.append(
            f"of which the mint and two PINGs cost {us(r['sequence'] - r['mint'] - 2 * r['rtt'])} "
            "more done in sequence than measured apart" + _after_work(r)
        )
    if key == "tracked_async" and "tracked_memory" in r:
        parts.append(
            f"the tracker's own Python {us(r['tracked_memory'] - r['mint'])} (the same requests "
            "on `MemoryStore`)"
        )
    if key == "tracked":
        parts.append(
            "redis-py's blocking client for the two script calls, and the provider's hand-off "
            "to a pooled worker that enforces its timeout"
        )
    return "; ".join(parts) + " (see NOTES.md)"


def _after_work(r: dict[str, Any]) -> str:
    """What two round trips cost right after a stretch of work, the mint's or a busy loop's."""
    if "busy_sequence" not in r:
        return ""
    apart = 2 * r["rtt"]
    after_mint = r["sequence"] - r["mint"]
    after_spin = r["busy_sequence"] - r["spin"]
    # Does a busy loop of the mint's length account for most of what the mint adds?
    any_work = after_spin - apart >= 0.5 * (after_mint - apart)
    cause = (
        "the round trips cost more after any stretch of work (Redis and the waiting thread "
        "woken from idle by the OS), not because of the mint"
        if any_work
        else "most of it follows the mint itself, not any stretch of work"
    )
    return (
        f": two PINGs take {us(after_mint)} right after a mint and {us(after_spin)} right "
        f"after a busy loop as long as a mint, against {us(apart)} back to back: {cause}"
    )


def _web_row(r: dict[str, Any] | None) -> str:
    name = "token endpoint, `serve --workers 2 --redis`, wrk"
    if r is None or "missing" in r:
        return f"| {name} | not run | | ≥ 0.75x | |"
    from bench.web import GOAL, cpu_bound_ratio, shares

    tracked, bare, ratios = r["tracked"], r["bare"], r["ratios"]
    ratio, by_cpu = r["ratio"], cpu_bound_ratio(r)
    others = max(pair[role]["cores_others"] for pair in r["pairs"] for role in pair)
    cpu = (
        f"CPU per request (`/proc`, medians): bare {us(bare['cpu_workers'])} in the workers, "
        f"tracked {us(tracked['cpu_workers'])} in the workers + {us(tracked['cpu_redis'])} in "
        f"redis-server, so by CPU alone **{by_cpu:.2f}x**"
    )
    shared = (
        f"2 cores shared with wrk and with other work (up to {others:.2f} cores busy elsewhere "
        "during a run)"
    )
    if ratio < GOAL:
        why = cpu + (
            "; the rest is each request's two Redis round trips waiting for redis-server to "
            f"be scheduled on {shared}"
            if by_cpu > ratio
            else f"; the rates moved with the load on {shared}"
        )
    elif by_cpu < GOAL:
        why = (
            f"by the rates only: {cpu}. Under load the rates follow the scheduler's shares "
            f"more than the cost (the tracked endpoint runs on three processes, two workers "
            f"and redis-server) on {shared}"
        )
    else:
        why = ""
    if by_cpu < GOAL and "shares" in r:
        part = shares(r)
        why += (
            f". What a tracked request adds in a worker (in-process): the tracker's own "
            f"Python {us(part['tracker'])}, the Redis store's two script calls "
            f"{us(part['redis'])}, the web layer {us(part['web'])} ({us(part['web_alone'])} "
            f"measured alone; the bare endpoint's {us(part['bare_web'])})"
        )
    return (
        f"| {name} | {tracked['rate']:,.0f} req/s (median of {len(ratios)} runs) | bare "
        f"endpoint (signed cookie, parse, mint, answer) {bare['rate']:,.0f} req/s in runs "
        f"alternating with them → **{_near(ratio, GOAL)}x** (pairs {min(ratios):.2f} to "
        f"{max(ratios):.2f}x; by CPU per request {by_cpu:.2f}x) | ≥ {GOAL}x | "
        f"{_verdict(ratio >= GOAL)} {why} |"
    )


def _blocking_row(r: dict[str, Any] | None) -> str:
    name = "blocking session, plain callables, default timeouts"
    if r is None:
        return f"| {name} | not run | | ≥ 2.5x | |"
    faces = r["faces"]
    own = faces["blocking, plain callables, default timeouts"]
    ratio = (own + faces["build"]) / own
    why = (
        ""
        if ratio >= 2.5
        else f"two hand-offs to a pooled worker at {us(faces['handoff'])} each in this run, "
        f"against {us(faces.get('pingpong', float('nan')))} for a bare lock passed to another "
        "thread and back (the machine's thread wake-up, shared with other load)"
    )
    return (
        f"| {name} | {us(own)} per visitor | the same plus a `Machine` per visitor "
        f"{us(own + faces['build'])} → **{_near(ratio, 2.5)}x** | ≥ 2.5x | "
        f"{_verdict(ratio >= 2.5)} {why} |"
    )


def _metrics_rows(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return ["| metrics listener on | not run | | ≤ 1.15x | |"]
    rows = []
    for label, m in (("", r), (", multiprocess mode", r.get("multiprocess"))):
        if m is None:
            continue
        ratio = m["metrics"] / m["none"]
        called = m.get("noop", m["logged"])  # log + a no-op function: what any listener costs
        why = (
            ""
            if ratio <= 1.15
            else f"log listener {us(m['logged'] - m['none'])}, any listener's call "
            f"{us(called - m['logged'])}, the counting {us(m['metrics'] - called)} per visitor"
            + (
                " (each transition counted at once in this worker's memory-mapped files, "
                "so that another worker's scrape sees it: a look-up and a float increment "
                "per transition, four at a flow's end, with no lock on the thread that "
                "counts first)"
                if label
                else " (a queue append per transition, counted in batches)"
            )
        )
        rows.append(
            f"| metrics listener on{label} | {us(m['metrics'])} per visitor | no listener "
            f"{us(m['none'])} → **{_near(ratio, 1.15)}x** | ≤ 1.15x | {_verdict(ratio <= 1.15)} "
            f"{why} |"
        )
    return rows


def _near(ratio: float, goal: float) -> str:
    """A ratio to two decimals, or three where two would read as the goal itself."""
    return f"{ratio:.3f}" if f"{ratio:.2f}" == f"{goal:.2f}" else f"{ratio:.2f}"


def _flows_row(r: dict[str, Any] | None) -> str:
    name = "10,000 async flows at 20 ms latency"
    if r is None:
        return f"| {name} | not run | | ≤ 1.5x | |"
    from bench.concurrency import LATENCY

    ratio = r["wall"] / (LATENCY + r["cpu"])
    return (
        f"| {name} | {r['wall'] * 1e3:,.0f} ms | latency {LATENCY * 1e3:.0f} ms + CPU "
        f"{r['cpu'] * 1e3:,.0f} ms → **{_near(ratio, 1.5)}x** | ≤ 1.5x | {_verdict(ratio <= 1.5)} |"
    )


def report(results: dict[str, Any], ran: list[str]) -> list[str]:
    return [
        "## The hosted path against its floor",
        "",
        f"Every row from this run (sections run: {', '.join(ran)}); ratios within the run.",
        "",
        "| what | measured | floor in the same run | goal | verdict |",
        "|---|---|---|---|---|",
        *_tracker_rows(results.get("tracker")),
        _web_row(results.get("web")),
        _blocking_row(results.get("engine")),
        *_metrics_rows(results.get("signals")),
        _flows_row(results.get("concurrency")),
        "",
    ]

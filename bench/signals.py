"""6. Signals: what listeners and Prometheus metrics cost a visitor's flow.

The async session with async callables (the engine's cheapest face), four
ways in the same run: no listener at all, the built-in log listener (info
filtered out, as in production at WARNING), the log listener plus a no-op
function (what any listener costs: the session's publishing loop calls it),
and the log listener plus ``ActivationMetrics``. The same again in a child
process with ``PROMETHEUS_MULTIPROC_DIR`` set (counts in memory-mapped files,
summed across workers), which must be set before prometheus-client is imported.

Small batches (200 visitors) of each variant in turn, many rounds, medians:
on a shared 2-core machine a slow spell then hits every variant alike, where
batches of 3,000 let one variant take a whole spell (the in-process row moved
0.92-1.20x between runs that way)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import us
from policies import DefensivePolicy
from statemachine import AsyncActivationSession, AuthenticationOption
from statemachine.signals.events import log_transition
from statemachine.signals.metrics import ActivationMetrics

POLICY = DefensivePolicy()


class Instant:
    async def activate(self, _option: AuthenticationOption) -> None:
        return None


async def provider() -> str:
    return "token"


def measure(setups: dict[str, Any], number: int, repeats: int) -> dict[str, Any]:
    """Batches of each variant in turn, so drift on a busy machine hits all of them alike.

    Medians of CPU time (the loop thread's: every call here runs on it, and other
    processes' load on the shared machine does not count, as it would in wall
    time) per visitor by variant, and of wall time under ``"wall"``.
    """

    async def batch(setup: Any) -> tuple[float, float]:
        started, wall = time.thread_time(), time.perf_counter()
        for _ in range(number):
            session = AsyncActivationSession(provider, Instant(), POLICY)
            setup(session)
            await session.activate()
        return (time.thread_time() - started) / number, (time.perf_counter() - wall) / number

    async def run() -> dict[str, Any]:
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
        for _ in range(repeats):
            for name, setup in setups.items():
                samples[name].append(await batch(setup))
        found: dict[str, Any] = {
            name: statistics.median(cpu for cpu, _ in values) for name, values in samples.items()
        }
        found["wall"] = {
            name: statistics.median(wall for _, wall in values) for name, values in samples.items()
        }
        return found

    return asyncio.run(run())


def run(quick: bool) -> dict[str, Any]:
    found = run_here(quick)
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as directory:
        code = (
            "import json; from bench import signals; from bench.common import quiet_logs; "
            f"quiet_logs(); print(json.dumps(signals.run_here({quick})))"
        )
        done = subprocess.run(  # the same measurement, counting into multiprocess files
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root), "PROMETHEUS_MULTIPROC_DIR": directory},
        )
    found["multiprocess"] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def run_here(quick: bool) -> dict[str, Any]:
    number, repeats = (50, 6) if quick else (200, 150)
    metrics = ActivationMetrics()

    def silent(session: Any) -> None:
        session.remove_listener(log_transition)

    def logged(_session: Any) -> None:
        return None

    def ignored(_event: Any) -> None:
        return None

    def noop(session: Any) -> None:
        session.add_listener(ignored)

    def counted(session: Any) -> None:
        session.add_listener(metrics)

    setups = {"none": silent, "logged": logged, "noop": noop, "metrics": counted}
    measure(setups, number, 2)  # warm up
    return measure(setups, number, repeats)


def report(r: dict[str, Any]) -> list[str]:
    return [
        "## 6. Listeners and metrics",
        "",
        "A visitor's happy path on `AsyncActivationSession` with async callables, in one loop: "
        "medians of CPU time of the loop's thread (wall time beside it), batches of each "
        "variant in turn. Target with the metrics listener on: ≤ 1.15x the same flow with no "
        "listener.",
        "",
        *_table(r, "listeners"),
        "With `PROMETHEUS_MULTIPROC_DIR` set (a child process; every worker writes its counts "
        "to memory-mapped files that any worker's `/metrics` sums):",
        "",
        *_table(r.get("multiprocess"), "listeners, multiprocess mode"),
    ]


def _table(r: dict[str, Any] | None, title: str) -> list[str]:
    if r is None:
        return ["Not run.", ""]
    none, wall = r["none"], r.get("wall", {})
    ratio = r["metrics"] / none
    rows = [
        ("none", "none"),
        ("logged", "the log listener (info filtered out)"),
        ("noop", "log + a no-op function (what any listener costs)"),
        ("metrics", "log + `ActivationMetrics`"),
    ]
    lines = [
        f"| {title} | CPU per visitor | ratio | wall per visitor |",
        "|---|---|---|---|",
    ]
    for key, label in rows:
        if key not in r:
            continue
        shown = f"{r[key] / none:.2f}x"
        if key == "metrics":
            shown = f"**{shown}** ({'met' if ratio <= 1.15 else 'MISSED'})"
        walled = us(wall[key]) if key in wall else ""
        lines.append(f"| {label} | {us(r[key])} | {shown} | {walled} |")
    own = r["metrics"] - r.get("noop", r["logged"])
    return [
        *lines,
        "",
        f"Against the default configuration (the log listener alone), the metrics listener "
        f"costs **{r['metrics'] / r['logged']:.2f}x**: {us(r['metrics'] - r['logged'])} per "
        "visitor for three transitions, one outcome and one duration"
        + (
            f", of which {us(r['noop'] - r['logged'])} is the call any listener costs and "
            f"{us(own)} the counting."
            if "noop" in r
            else "."
        ),
        "",
    ]

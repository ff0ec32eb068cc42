"""6. Signals: what listeners and Prometheus metrics cost a visitor's flow.

The async session with async callables (the engine's cheapest face), three
ways in the same run: no listener at all, the built-in log listener (info
filtered out, as in production at WARNING), and the log listener plus
``ActivationMetrics``. The same three again in a child process with
``PROMETHEUS_MULTIPROC_DIR`` set (counts in memory-mapped files, summed across
workers), which must be set before prometheus-client is imported.
"""

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


def measure(setups: dict[str, Any], number: int, repeats: int) -> dict[str, float]:
    """Batches of each variant in turn, so drift on a busy machine hits all of them alike."""

    async def batch(setup: Any) -> float:
        # CPU time of the loop's thread (every call here runs on it): other processes' load on
        # the shared machine does not count, as it would in wall time.
        started = time.thread_time()
        for _ in range(number):
            session = AsyncActivationSession(provider, Instant(), POLICY)
            setup(session)
            await session.activate()
        return (time.thread_time() - started) / number

    async def run() -> dict[str, float]:
        samples: dict[str, list[float]] = {name: [] for name in setups}
        for _ in range(repeats):
            for name, setup in setups.items():
                samples[name].append(await batch(setup))
        return {name: statistics.median(values) for name, values in samples.items()}

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
    number, repeats = (300, 3) if quick else (3000, 7)
    metrics = ActivationMetrics()

    def silent(session: Any) -> None:
        session.remove_listener(log_transition)

    def logged(_session: Any) -> None:
        return None

    def counted(session: Any) -> None:
        session.add_listener(metrics)

    setups = {"none": silent, "logged": logged, "metrics": counted}
    measure(setups, number // 10, 1)  # warm up
    return measure(setups, number, repeats * 2)


def report(r: dict[str, Any]) -> list[str]:
    ratio = r["metrics"] / r["none"]
    over_default = r["metrics"] / r["logged"]
    return [
        "## 6. Listeners and metrics",
        "",
        "A visitor's happy path on `AsyncActivationSession` with async callables, in one loop "
        "(CPU time of the loop's thread). "
        "Target with the metrics listener on: ≤ 1.15x the same flow with no listener.",
        "",
        "| listeners | median per visitor | ratio |",
        "|---|---|---|",
        f"| none | {us(r['none'])} | 1.00x |",
        f"| the log listener (info filtered out) | {us(r['logged'])} | "
        f"{r['logged'] / r['none']:.2f}x |",
        f"| log + `ActivationMetrics` | {us(r['metrics'])} | **{ratio:.2f}x** "
        f"({'met' if ratio <= 1.15 else 'MISSED'}) |",
        "",
        f"Against the default configuration (the log listener alone), the metrics listener "
        f"costs **{over_default:.2f}x**: {us(r['metrics'] - r['logged'])} per visitor for three "
        "transitions, one outcome and one duration.",
        "",
        *_multiprocess_rows(r.get("multiprocess")),
    ]


def _multiprocess_rows(m: dict[str, float] | None) -> list[str]:
    if m is None:
        return []
    ratio, over_default = m["metrics"] / m["none"], m["metrics"] / m["logged"]
    return [
        "With `PROMETHEUS_MULTIPROC_DIR` set (a child process; every worker writes its counts "
        "to memory-mapped files that any worker's `/metrics` sums):",
        "",
        "| listeners, multiprocess mode | median per visitor | ratio |",
        "|---|---|---|",
        f"| none | {us(m['none'])} | 1.00x |",
        f"| the log listener (info filtered out) | {us(m['logged'])} | "
        f"{m['logged'] / m['none']:.2f}x |",
        f"| log + `ActivationMetrics` | {us(m['metrics'])} | **{ratio:.2f}x** |",
        "",
        f"Against the log listener alone: **{over_default:.2f}x**, "
        f"{us(m['metrics'] - m['logged'])} per visitor.",
        "",
    ]

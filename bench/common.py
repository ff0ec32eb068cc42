"""Timing helpers: medians of repeated runs, ratios against a baseline in the same run."""

from __future__ import annotations

import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import structlog


def quiet_logs() -> None:
    """Benchmarks measure the engine, not a log renderer: info events are filtered out."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def per_call(fn: Callable[[], object], number: int, repeats: int) -> float:
    """Median seconds per call over ``repeats`` batches of ``number`` calls."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - started) / number)
    return statistics.median(samples)


def median_of(fn: Callable[[], float], repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def machine_description() -> str:
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("transitions", "jwcrypto", "structlog", "cryptography")
    )
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}, "
        f"Python {sys.version.split()[0]} ({platform.python_implementation()}); {versions}"
    )


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def start_server(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    ready_url: str,
    what: str,
    stop: Callable[[subprocess.Popen[bytes]], None],
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session and wait (60 s at most) until ``ready_url`` answers;
    on time out ``stop`` it and raise."""
    process = subprocess.Popen(  # loopback only
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(ready_url, timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"{what} did not start")

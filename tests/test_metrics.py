"""Metrics: the Prometheus listener counts what the transitions say.

On real sessions with real tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

from policies import DefensivePolicy
from statemachine import (
    ActivationSession,
    LocalActivator,
)
from statemachine.protocol.results import HistoryEntry
from statemachine.protocol.states import State, Trigger
from statemachine.signals.events import TransitionEvent
from statemachine.signals.metrics import DRAIN_AT, ActivationMetrics, _MappedFile
from statemachine.tokens import TokenIssuer, TokenVerifier


# -- metrics --------------------------------------------------------------------
def _samples(metrics: ActivationMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_match_the_transitions_taken(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    metrics = ActivationMetrics()
    heard: list[TransitionEvent] = []
    outcomes: dict[str, int] = {}
    for index in range(6):
        fails = index % 3 == 0
        session = ActivationSession(
            (lambda: None) if fails else partial(issuer.issue, f"user-{index}"),
            LocalActivator(verifier),
            DefensivePolicy(),
        )
        session.add_listener(metrics)
        session.add_listener(heard.append)
        state = session.activate().state.value
        outcomes[state] = outcomes.get(state, 0) + 1
    samples = _samples(metrics)
    for event in heard:
        labels = (
            ("dest", event.dest.value),
            ("policy", "defensive"),
            ("source", event.source.value),
            ("trigger", event.trigger.value),
        )
        expected = sum(
            1
            for e in heard
            if (e.source, e.dest, e.trigger) == (event.source, event.dest, event.trigger)
        )
        assert samples[("secured_activation_transitions_total", labels)] == expected
    assert (
        samples[
            (
                "secured_activation_outcomes_total",
                (("policy", "defensive"), ("reason", "none"), ("state", "authenticated")),
            )
        ]
        == outcomes["authenticated"]
    )
    assert (
        samples[
            (
                "secured_activation_outcomes_total",
                (("policy", "defensive"), ("reason", "TOKEN_UNAVAILABLE"), ("state", "blocked")),
            )
        ]
        == outcomes["blocked"]
    )
    count = samples[
        (
            "secured_activation_flow_duration_seconds_count",
            (("policy", "defensive"), ("state", "authenticated")),
        )
    ]
    assert count == outcomes["authenticated"]
    text = metrics.render().decode()
    assert "secured_activation_transitions_total" in text
    for private in ("user-", "eyJ", "session_id"):
        assert private not in text


# -- multiprocess mode: counts in this worker's memory-mapped files, at once ------------------
_WORKER = """
import logging
import os
import sys
import threading
from functools import partial

import structlog

from policies import DefensivePolicy
from statemachine import ActivationSession, LocalActivator
from statemachine.signals.metrics import ActivationMetrics
from statemachine.tokens import TokenIssuer, TokenVerifier, generate_rsa

brand, platform = generate_rsa(), generate_rsa()
issuer = TokenIssuer(brand, platform, "https://brand.example")
verifier = TokenVerifier(platform, brand, issuer="https://brand.example")
metrics = ActivationMetrics()
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def flows(count, fails=False):
    for index in range(count):
        session = ActivationSession(
            (lambda: None) if fails else partial(issuer.issue, f"user-{index}"),
            LocalActivator(verifier),
            DefensivePolicy(),
        )
        session.add_listener(metrics)
        session.activate()


for line in sys.stdin:  # one command a line; "ok" once done, and the process lives on
    command, _, argument = line.strip().partition(" ")
    if command == "flows":
        flows(int(argument))
    elif command == "failing":
        flows(int(argument), fails=True)
    elif command == "threads":  # 4 threads and this one at once, each ``argument`` flows
        workers = [threading.Thread(target=flows, args=(int(argument),)) for _ in range(4)]
        for worker in workers:
            worker.start()
        flows(int(argument))
        for worker in workers:
            worker.join()
    elif command == "fork":  # a forked child counts its own flows in files with its pid
        pid = os.fork()
        if pid == 0:
            flows(int(argument))
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid, flush=True)
        continue
    elif command == "unset":  # the environment changed after the metrics were made
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    elif command == "render":
        print(metrics.render().decode().replace("\\n", "|"), flush=True)
        continue
    print("ok", flush=True)
"""


class Worker:
    """A worker process with ``PROMETHEUS_MULTIPROC_DIR`` set, alive between commands."""

    def __init__(self, directory: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=directory.parent,
        )

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0
        self.process.stdout.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Path, list[Worker]]]:
    directory = tmp_path / "metrics"
    directory.mkdir()
    started = [Worker(directory), Worker(directory)]
    try:
        yield directory, started
    finally:
        for worker in started:
            worker.close()


def _scraped(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What a scrape answered by any worker shows: every file of the directory, summed."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    found = {}
    for family in registry.collect():
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


AUTHENTICATED = (
    "secured_activation_outcomes_total",
    (("policy", "defensive"), ("reason", "none"), ("state", "authenticated")),
)
BLOCKED = (
    "secured_activation_outcomes_total",
    (("policy", "defensive"), ("reason", "TOKEN_UNAVAILABLE"), ("state", "blocked")),
)
TIMED = (
    "secured_activation_flow_duration_seconds_count",
    (("policy", "defensive"), ("state", "authenticated")),
)
SUCCEEDED = (
    "secured_activation_transitions_total",
    (
        ("dest", "authenticated"),
        ("policy", "defensive"),
        ("source", "activating"),
        ("trigger", "activation_succeeded"),
    ),
)

RECEIVED = (  # a transition in the middle of a flow
    "secured_activation_transitions_total",
    (
        ("dest", "activating"),
        ("policy", "defensive"),
        ("source", "fetching_token"),
        ("trigger", "token_received"),
    ),
)


def test_a_workers_counts_reach_a_scrape_at_once(workers: tuple[Path, list[Worker]]) -> None:
    """No flush, no exit: right after its flows answer, another process's scrape sees them."""
    directory, (first, second) = workers
    assert first.ask("flows 3") == "ok"
    scraped = _scraped(directory)
    assert scraped[AUTHENTICATED] == 3
    assert scraped[SUCCEEDED] == 3
    assert scraped[RECEIVED] == 3
    assert scraped[TIMED] == 3
    assert second.ask("flows 2") == "ok"
    assert first.ask("failing 1") == "ok"
    scraped = _scraped(directory)
    assert scraped[AUTHENTICATED] == 5
    assert scraped[BLOCKED] == 1
    assert scraped[TIMED] == 5
    every_bucket = {
        labels for name, labels in scraped if name.endswith("_bucket") and "blocked" in str(labels)
    }
    assert len(every_bucket) == 13  # every bucket of a series, from its first observation
    rendered = second.ask("render")  # a scrape answered by the other worker: the same sums
    assert (
        'secured_activation_outcomes_total{policy="defensive",reason="none",'
        'state="authenticated"} 5.0'
    ) in rendered.split("|")


def test_counts_go_where_the_environment_said_at_the_start(
    workers: tuple[Path, list[Worker]],
) -> None:
    directory, (first, _) = workers
    assert first.ask("unset") == "ok"
    assert first.ask("flows 2") == "ok"
    assert _scraped(directory)[AUTHENTICATED] == 2
    assert not list(directory.parent.glob("*.db"))  # nothing beside it, in the working directory


def test_threads_of_one_worker_lose_no_count(workers: tuple[Path, list[Worker]]) -> None:
    """The first thread to count owns cells it counts into without a lock; others lock theirs."""
    directory, (first, _) = workers
    assert first.ask("flows 1") == "ok"  # the worker's main thread counts first: the owner
    assert first.ask("threads 50") == "ok"  # it counts again, beside 4 other threads
    scraped = _scraped(directory)
    assert scraped[AUTHENTICATED] == 251
    assert scraped[SUCCEEDED] == 251
    assert scraped[TIMED] == 251
    outcomes = {
        path.name.removeprefix("counter_").split("-", 1)[1]: sum(
            value
            for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))
            if "_outcomes_total" in key
        )
        for path in directory.glob("counter_*.db")
    }
    assert outcomes == {"secured_activation.db": 51, "secured_activation-threads.db": 200}


def test_a_forked_child_counts_in_files_of_its_own(workers: tuple[Path, list[Worker]]) -> None:
    """After a fork the child must not write into its parent's files (the same slots)."""
    directory, (first, _) = workers
    assert first.ask("flows 2") == "ok"
    child = first.ask("fork 3")  # the child's own pool runs its calls: they authenticate
    assert first.ask("flows 1") == "ok"
    scraped = _scraped(directory)
    ended = sum(v for (name, _), v in scraped.items() if name.endswith("_outcomes_total"))
    assert ended == 6
    assert scraped[AUTHENTICATED] == 6
    own = [path for path in directory.iterdir() if path.name.startswith(f"counter_{child}-")]
    assert len(own) == 1
    values = MmapedDict.read_all_values_from_file(str(own[0]))
    assert sum(value for key, value, _, _ in values if "_outcomes_total" in key) == 3


def test_our_files_are_prometheus_clients_format(tmp_path: Path) -> None:
    """Read back by prometheus-client's own reader, across growth and a reopening."""
    path = tmp_path / "counter_1-x.db"
    mapped = _MappedFile(str(path))
    keys = [
        json.dumps(["m", "m_total", {"n": f"{index:05d}" * 8}, "help"], sort_keys=True)
        for index in range(1500)  # ~230 KiB of entries: the 64 KiB file grows twice
    ]
    early = mapped.cell(keys[0])
    for index, key in enumerate(keys):
        mapped.cell(key)[0] += index
    early[0] += 0.5  # a cell given before the file grew still counts into it
    assert path.stat().st_size == 4 * 65536
    read = {key: value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))}
    assert read == {key: index + (0.5 if index == 0 else 0) for index, key in enumerate(keys)}
    again = _MappedFile(str(path))  # a process reusing a dead one's pid: its counts go on
    again.cell(keys[7])[0] += 1
    again.cell("new")[0] += 2
    read = dict(
        (key, value) for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))
    )
    assert (read[keys[7]], read["new"], len(read)) == (8, 2, 1501)
    mapped.close()
    again.close()


def test_metrics_in_process_count_every_policy_and_thread() -> None:
    """Batches are counted whatever their mix of policies, and no event of a thread is lost."""
    metrics = ActivationMetrics()
    entry = HistoryEntry(
        State.UNAUTHENTICATED, State.FETCHING_TOKEN, Trigger.ACTIVATE, 0, None, 1.0
    )

    def burst(policy: str) -> None:
        for _ in range(DRAIN_AT * 5 + 3):
            metrics(TransitionEvent("s", entry, None, policy, 1.0))

    threads = [threading.Thread(target=burst, args=(p,)) for p in ("a", "b", "a", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = _samples(metrics)
    labels = (("dest", "fetching_token"), ("policy", "{}"), ("source", "unauthenticated"))
    for policy, times in (("a", 2), ("b", 1), ("c", 1)):
        key = tuple(
            (name, value.format(policy)) for name, value in (*labels, ("trigger", "activate"))
        )
        assert samples[("secured_activation_transitions_total", key)] == times * (DRAIN_AT * 5 + 3)

"""Prometheus metrics as a transition listener (extra ``[metrics]``: prometheus-client).

Counters of transitions and of outcomes, and a histogram of flow durations,
all labelled with low-cardinality values only: states, triggers, reason
names and the policy's name — never a visitor id, a user id or a token.

Several worker processes behind one socket: a scrape reaches one of them, so
per-process counts would show whichever worker answered. With
``PROMETHEUS_MULTIPROC_DIR`` set before the processes start (prometheus-client's
multiprocess convention), every worker writes its counts to its own memory-mapped
file in that directory and ``render()`` sums every file: each scrape, on any
worker, shows the whole machine. Clear the directory when the server starts
(counts of earlier runs would be summed too).

The counts live in plain dictionaries under one lock, and prometheus-client
reads them only when scraped (a custom collector). A transition is only
appended to a queue (atomic, no lock); the queue is counted in batches, and
always before a scrape, so a scrape sees every transition that happened
before it. That keeps metrics within a few per cent of a visitor's flow. In
multiprocess mode a transition costs one dictionary look-up per series and a
write to the memory-mapped file (prometheus-client's own value, under its lock).
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from statemachine.signals.events import TransitionEvent

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

DURATION_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""A flow is a token request and an activation, plus retries and their backoffs."""

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

DRAIN_AT: Final = 256
"""Transitions queued before they are counted (a scrape counts the queue first)."""

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's variable: where every worker process writes its counts."""


class ActivationMetrics:
    """A listener: ``session.add_listener(metrics)``, ``tracker.add_listener(metrics)``.

    ``render()`` gives the Prometheus text; ``registry`` is where the
    collector is registered (a fresh one unless given). With
    ``PROMETHEUS_MULTIPROC_DIR`` set, counts go to that directory and
    ``registry`` holds prometheus-client's ``MultiProcessCollector``, which sums
    every worker's files: ``render()`` is then the machine's aggregate (with any
    other metric the app writes there). Pass no registry in that mode, or one
    without a ``MultiProcessCollector`` of its own: two would export every series
    twice.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "secured_activation",
    ) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError:
            raise ImportError(
                "metrics need prometheus-client: pip install 'secured-activation[metrics]'"
            ) from None
        self.namespace = namespace
        self._lock = threading.Lock()
        self._queue: deque[TransitionEvent] = deque()
        self._transitions: dict[tuple[str, str, str, str], int] = {}
        self._outcomes: dict[tuple[str, str, str], int] = {}
        # per (state, policy): a count per bucket (the last is +Inf), and the sum
        self._durations: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self._watched: list[Any] = []  # trackers whose store's counters are exported too
        self._refusals: dict[str, int] = {}  # per policy: token requests over the budget
        self.registry = registry if registry is not None else CollectorRegistry()
        self.shared = _shared_series(namespace) if os.environ.get(MULTIPROC_ENV) else None
        if self.shared is None:
            self.registry.register(self)
        else:
            from prometheus_client.multiprocess import MultiProcessCollector

            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]

    def watch(self, tracker: Any) -> None:
        """Export the drops of a tracker's memory store (``tracker.add_listener`` calls this).

        The store's ``evicted`` and ``refused`` counts are read at scrape
        time, so the request path pays nothing for them. A memory store is one
        process's own: in multiprocess mode they are not exported.
        """
        if all(tracker is not seen for seen in self._watched):
            self._watched.append(tracker)

    def budget_refused(self, policy: str) -> None:
        """A token request was refused (429): the visitor's minting budget was spent.

        A tracker calls this on every listener that has it.
        """
        if self.shared is not None:
            self.shared.refused(policy)
            return
        with self._lock:
            self._refusals[policy] = self._refusals.get(policy, 0) + 1

    def __call__(self, event: TransitionEvent) -> None:
        if self.shared is not None:
            self.shared.count(event)
            return
        # One atomic append per transition; the counting happens in batches (here every
        # DRAIN_AT events, and before every scrape), so a flow pays no lock per step.
        queue = self._queue
        queue.append(event)
        if len(queue) >= DRAIN_AT:
            self._drain()

    def _drain(self) -> None:
        """Count the queued events (``popleft`` is atomic: an event appended meanwhile waits)."""
        queue = self._queue
        with self._lock:
            transitions, outcomes, durations = self._transitions, self._outcomes, self._durations
            while True:
                try:
                    event = queue.popleft()
                except IndexError:
                    return
                policy = event.policy
                key = (event.source._value_, event.dest._value_, event.trigger._value_, policy)
                transitions[key] = transitions.get(key, 0) + 1
                if not event.ends_flow:
                    continue
                state = event.dest._value_
                reason = "none" if event.reason is None else event.reason._name_
                outcome = (state, reason, policy)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if event.flow_started_at is None:
                    continue
                seconds = max(0.0, event.at - event.flow_started_at)
                series = durations.get((state, policy))
                if series is None:
                    series = durations[(state, policy)] = (
                        [0] * (len(DURATION_BUCKETS) + 1),
                        [0.0],
                    )
                series[0][bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
                series[1][0] += seconds

    def collect(self) -> Iterator[Any]:
        """What prometheus-client reads at scrape time."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        self._drain()
        with self._lock:
            transitions = dict(self._transitions)
            outcomes = dict(self._outcomes)
            durations = {k: (list(v[0]), v[1][0]) for k, v in self._durations.items()}
        name = self.namespace
        family = CounterMetricFamily(
            f"{name}_transitions",
            "Transitions taken, by source, destination, trigger and policy.",
            labels=["source", "dest", "trigger", "policy"],
        )
        for labels, count in sorted(transitions.items()):
            family.add_metric(list(labels), count)
        yield family
        outcome_family = CounterMetricFamily(
            f"{name}_outcomes",
            "Flows brought to rest, by final state, reason and policy.",
            labels=["state", "reason", "policy"],
        )
        for outcome, count in sorted(outcomes.items()):
            outcome_family.add_metric(list(outcome), count)
        yield outcome_family
        histogram = HistogramMetricFamily(
            f"{name}_flow_duration_seconds",
            "Seconds from the start of a flow to its rest, by final state and policy.",
            labels=["state", "policy"],
        )
        for series, (counts, total) in sorted(durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            histogram.add_metric(list(series), buckets, total)
        yield histogram
        yield from self._collect_watched()

    def _collect_watched(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        name = self.namespace
        with self._lock:
            refusals = dict(self._refusals)
        stores = {id(t.store): t.store for t in self._watched}
        budget = CounterMetricFamily(
            f"{name}_budget_refusals",
            "Token requests refused (429) because the visitor's minting budget was spent.",
            labels=["policy"],
        )
        for policy, count in sorted(refusals.items()):
            budget.add_metric([policy], count)
        yield budget
        evicted = CounterMetricFamily(
            f"{name}_store_evicted",
            "Settled visitors the memory store dropped to make room for new ones.",
        )
        evicted.add_metric([], sum(int(getattr(s, "evicted", 0)) for s in stores.values()))
        yield evicted
        refused = CounterMetricFamily(
            f"{name}_store_full_refusals",
            "New visitors the memory store refused: full, and every visitor in flight.",
        )
        refused.add_metric([], sum(int(getattr(s, "refused", 0)) for s in stores.values()))
        yield refused

    def describe(self) -> list[Any]:
        return []  # families are only known at collect time

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class _SharedSeries:
    """The same series as prometheus-client metrics whose values live in the multiprocess files.

    One instance per namespace and process (the files are per process, and two
    instances writing the same keys would each overwrite the other's count).
    """

    def __init__(self, namespace: str) -> None:
        from prometheus_client import Counter, Histogram

        # registry=None: the values are read back from the files by the MultiProcessCollector
        self.transitions = Counter(
            f"{namespace}_transitions",
            "Transitions taken, by source, destination, trigger and policy.",
            ["source", "dest", "trigger", "policy"],
            registry=None,
        )
        self.outcomes = Counter(
            f"{namespace}_outcomes",
            "Flows brought to rest, by final state, reason and policy.",
            ["state", "reason", "policy"],
            registry=None,
        )
        self.durations = Histogram(
            f"{namespace}_flow_duration_seconds",
            "Seconds from the start of a flow to its rest, by final state and policy.",
            ["state", "policy"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.refusals = Counter(
            f"{namespace}_budget_refusals",
            "Token requests refused (429) because the visitor's minting budget was spent.",
            ["policy"],
            registry=None,
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def refused(self, policy: str) -> None:
        self._child(self.refusals, ("r", policy)).inc()

    def _child(self, metric: Any, key: tuple[str, ...]) -> Any:
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children[key] = metric.labels(*key[1:])
        return child

    def count(self, event: TransitionEvent) -> None:
        source, dest = event.source._value_, event.dest._value_
        self._child(
            self.transitions, ("t", source, dest, event.trigger._value_, event.policy)
        ).inc()
        if not event.ends_flow:
            return
        reason = "none" if event.reason is None else event.reason._name_
        self._child(self.outcomes, ("o", dest, reason, event.policy)).inc()
        if event.flow_started_at is not None:
            seconds = max(0.0, event.at - event.flow_started_at)
            self._child(self.durations, ("d", dest, event.policy)).observe(seconds)


_SHARED: dict[str, _SharedSeries] = {}
_SHARED_LOCK = threading.Lock()


def _shared_series(namespace: str) -> _SharedSeries:
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(
            f"{MULTIPROC_ENV} was set after prometheus_client was imported; "
            "set it in the environment before the process starts"
        )
    with _SHARED_LOCK:
        shared = _SHARED.get(namespace)
        if shared is None:
            shared = _SHARED[namespace] = _SharedSeries(namespace)
        return shared


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)

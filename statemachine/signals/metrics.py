"""Prometheus metrics as a transition listener (extra ``[metrics]``: prometheus-client).

Counters of transitions and of outcomes, and a histogram of flow durations,
all labelled with low-cardinality values only: states, triggers, reason
names and the policy's name — never a visitor id, a user id or a token.

Several worker processes behind one socket: a scrape reaches one of them, so
per-process counts would show whichever worker answered. With
``PROMETHEUS_MULTIPROC_DIR`` set before the processes start (prometheus-client's
multiprocess convention), every worker writes its counts to its own memory-mapped
files in that directory and ``render()`` sums every file: each scrape, on any
worker, shows the whole machine. Clear the directory when the server starts
(counts of earlier runs would be summed too).

In one process the counts live in plain dictionaries under one lock, and
prometheus-client reads them only when scraped (a custom collector). A
transition is only appended to a queue (atomic, no lock); the queue is
counted in batches (in C for the transitions; one look-up per flow's end for
its outcome and duration), and always before a scrape, so a scrape sees
every transition that happened before it.

In multiprocess mode a transition is counted at once, in the memory-mapped
files, so that a scrape answered by another worker right after the request
that caused it sees it: a listener cannot tell when that request answers, so
it cannot hold a batch back until then. What makes it cheap is the write:
the files are ours (named beside prometheus-client's own, in its format,
which its ``MultiProcessCollector`` reads and sums), each series a float64
*cell* found by one dictionary look-up and incremented in place (four cells
at a flow's end), where prometheus-client's own values take its process-wide
lock, check the process id and pack the value for every one of a flow's six
increments. The first thread to count (an asyncio worker's loop) owns a set
of cells it counts into with no lock, since no other thread writes them;
other threads count into a set of their own, under one lock. The count is a
plain function the publishing loop calls directly.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterator
from itertools import islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, TypeAlias

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

_TRANSITIONS_HELP: Final = "Transitions taken, by source, destination, trigger and policy."
_OUTCOMES_HELP: Final = "Flows brought to rest, by final state, reason and policy."
_DURATIONS_HELP: Final = "Seconds from the start of a flow to its rest, by final state and policy."
_REFUSALS_HELP: Final = (
    "Token requests refused (429) because the visitor's minting budget was spent."
)

# C-level getters for counting a batch (TransitionEvent and HistoryEntry are named tuples).
_TRANSITION = itemgetter(1)
_POLICY = itemgetter(3)
_ENDS_FLOW = itemgetter(5)
_MOVE = itemgetter(0, 1, 2)  # a transition's (source, dest, trigger)


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
                "metrics need prometheus-client: the [metrics] extra, from your clone of "
                "secured-activation (pip install -e '.[metrics]' there)"
            ) from None
        self.namespace = namespace
        self._lock = threading.Lock()
        self._queue: deque[TransitionEvent] = deque()
        # per policy: (source, dest, trigger) members (str enums: str's hash) -> count
        self._transitions: dict[str, Counter[tuple[Any, ...]]] = {}
        # per flow's end, (dest, reason, policy) members: its count, a count per bucket of its
        # duration (the last is +Inf) and their sum; one look-up per flow counts both
        self._ends: dict[tuple[Any, Any, str], list[float]] = {}
        self._watched: list[Any] = []  # trackers whose store's counters are exported too
        self._refusals: dict[str, int] = {}  # per policy: token requests over the budget
        self.registry = registry if registry is not None else CollectorRegistry()
        self.shared = _shared_series(namespace) if os.environ.get(MULTIPROC_ENV) else None
        if self.shared is None:
            self.registry.register(self)
        else:
            # what a session's or tracker's publishing loop calls instead of this object
            self._transition_call = self.shared.count
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
        shared = self.shared
        if shared is None:
            # One atomic append per transition; the counting happens in batches (here every
            # DRAIN_AT events, and before every scrape), so a flow pays no lock per step.
            queue = self._queue
            queue.append(event)
            if len(queue) >= DRAIN_AT:
                self._drain()
            return
        shared.count(event)

    def _drain(self) -> None:
        """Count the queued events (``popleft`` is atomic: an event appended meanwhile waits).

        One drain at a time (the lock), so the ``len(queue)`` events at its start
        are there to pop; the counting runs in C (``Counter.update`` over
        ``itemgetter`` maps) but for the events that end a flow.
        """
        queue = self._queue
        with self._lock:
            batch = list(islice(iter(queue.popleft, None), len(queue)))
            if not batch:
                return
            policies = set(map(_POLICY, batch))
            moves = map(_MOVE, map(_TRANSITION, batch))
            if len(policies) == 1:  # as a rule (one policy per app): 3-tuple keys, all in C
                self._moves(policies.pop()).update(moves)
            else:
                for policy, move in zip(map(_POLICY, batch), moves, strict=True):
                    self._moves(policy)[move] += 1
            ends = self._ends
            for event in filter(_ENDS_FLOW, batch):
                transition = event[1]  # (source, dest, trigger, attempt, reason, at)
                key = (transition[1], transition[4], event[3])  # dest, reason, policy
                series = ends.get(key)
                if series is None:
                    series = ends[key] = [0] * (len(DURATION_BUCKETS) + 2) + [0.0]
                series[0] += 1
                started = event[4]  # the flow's start
                if started is None:
                    continue
                seconds = transition[5] - started  # type: ignore[operator] # the core stamps it
                if seconds < 0.0:
                    seconds = 0.0
                series[1 + bisect_left(DURATION_BUCKETS, seconds)] += 1
                series[-1] += seconds

    def _moves(self, policy: str) -> Counter[tuple[Any, ...]]:
        moves = self._transitions.get(policy)
        if moves is None:
            moves = self._transitions[policy] = Counter()
        return moves

    def collect(self) -> Iterator[Any]:
        """What prometheus-client reads at scrape time."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        self._drain()
        with self._lock:
            transitions = [
                ([source._value_, dest._value_, trigger._value_, policy], count)
                for policy, moves in self._transitions.items()
                for (source, dest, trigger), count in moves.items()
            ]
            ends = [(key, list(series)) for key, series in self._ends.items()]
        outcomes: dict[tuple[str, str, str], int] = {}
        durations: dict[tuple[str, str], tuple[list[int], float]] = {}
        for (dest, reason, policy), (count, *timed, seconds) in ends:
            state = dest._value_
            outcomes[(state, "none" if reason is None else reason._name_, policy)] = int(count)
            if not any(timed):  # no flow that ended so was timed
                continue
            counts, total = durations.get((state, policy), ([0] * len(timed), 0.0))
            durations[(state, policy)] = (
                [int(a + b) for a, b in zip(counts, timed, strict=True)],
                total + seconds,
            )
        name = self.namespace
        family = CounterMetricFamily(
            f"{name}_transitions",
            _TRANSITIONS_HELP,
            labels=["source", "dest", "trigger", "policy"],
        )
        for labels, count in sorted(transitions):
            family.add_metric(labels, count)
        yield family
        outcome_family = CounterMetricFamily(
            f"{name}_outcomes",
            _OUTCOMES_HELP,
            labels=["state", "reason", "policy"],
        )
        for outcome, count in sorted(outcomes.items()):
            outcome_family.add_metric(list(outcome), count)
        yield outcome_family
        histogram = HistogramMetricFamily(
            f"{name}_flow_duration_seconds",
            _DURATIONS_HELP,
            labels=["state", "policy"],
        )
        for series, (counts, total) in sorted(durations.items()):
            cumulative, buckets = 0, []  # (bound, cumulative count)
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
            _REFUSALS_HELP,
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


# -- multiprocess mode ---------------------------------------------------------------------------
_USED = struct.Struct("i")  # the file's first 4 bytes: how many bytes are in use (then 4 spare)
_INITIAL_SIZE: Final = 1 << 16  # as prometheus-client's own files
_ENTRY_AT: Final = 8
_get_ident = threading.get_ident
_Cell: TypeAlias = "memoryview[float]"
"""One float64 of a file, counted in place."""


class _MappedFile:
    """One file of this process in prometheus-client's multiprocess format, ours alone.

    The format its ``MultiProcessCollector`` reads (``prometheus_client.mmap_dict``,
    the same since 0.19: pyproject bounds the version, and tests/test_metrics.py
    reads our files back with prometheus-client's own reader): a 4-byte count of
    the bytes used, 4 bytes of padding, then entries of a 4-byte key length, the
    key (JSON ``[metric, sample, labels, help]``) padded to 8-byte alignment, a
    float64 value and a float64 timestamp (0.0 for a count). A series' value is
    a *cell*: a memoryview of its one float64 in the map, so that counting is
    one float increment, never re-encoded. An entry is written whole before the
    count of bytes used covers it, so a reader never sees half of one. When the
    file grows, it is mapped anew; the cells already given keep the old map
    alive, and it maps the same bytes of the same file. The caller holds the
    series' lock.
    """

    def __init__(self, path: str) -> None:
        self._file = open(path, "a+b")  # noqa: SIM115 - open while the process counts
        fileno = self._file.fileno()
        capacity = os.fstat(fileno).st_size
        if capacity == 0:
            self._file.truncate(_INITIAL_SIZE)
            capacity = _INITIAL_SIZE
        self._map = mmap.mmap(fileno, capacity)
        self._cells: dict[str, _Cell] = {}
        used = _USED.unpack_from(self._map, 0)[0]
        if used == 0:
            used = _ENTRY_AT
            self._map[0:4] = _USED.pack(used)
        else:  # a dead process's file with our pid: its counts go on, as prometheus-client's
            at = _ENTRY_AT
            while at < used:
                length = _USED.unpack_from(self._map, at)[0]
                key = bytes(self._map[at + 4 : at + 4 + length]).decode()
                at += 4 + length + (8 - (length + 4) % 8)
                self._cells[key] = self._cell(at)
                at += 16
        self._used = used

    def cell(self, key: str) -> _Cell:
        """The cell of ``key``'s value, added (at zero) the first time."""
        cell = self._cells.get(key)
        if cell is not None:
            return cell
        encoded = key.encode()
        padding = b" " * (8 - (len(encoded) + 4) % 8)
        entry = _USED.pack(len(encoded)) + encoded + padding + bytes(16)  # value, timestamp: 0.0
        used = self._used
        while used + len(entry) > len(self._map):
            capacity = 2 * len(self._map)
            self._file.truncate(capacity)
            self._map = mmap.mmap(self._file.fileno(), capacity)
        self._map[used : used + len(entry)] = entry
        self._used = used = used + len(entry)
        self._map[0:4] = _USED.pack(used)
        cell = self._cells[key] = self._cell(used - 16)
        return cell

    def _cell(self, at: int) -> _Cell:
        return memoryview(self._map)[at : at + 8].cast("d")

    def close(self) -> None:
        """Close the file; the maps, and the cells in them, stay (they hold their own handle)."""
        self._file.close()


class _SharedSeries:
    """Our series in this process's multiprocess files: the same names, labels and help.

    One instance per namespace and process (two writing the same keys would
    each overwrite the other's count). The files are ours alone, beside
    prometheus-client's own ``counter_<pid>.db``, in two sets that its collector
    sums like any other files: the *owner's* (``counter_<pid>-<namespace>.db``
    and ``histogram_...``), counted only by the first thread that counts (an
    asyncio worker's loop thread), with no lock, since no other thread writes
    them; and the *other threads'* (``..._<pid>-<namespace>-threads.db``),
    counted under ``lock``. ``lock`` also guards every file's layout (a new
    series, a file's growth) and the budget refusals' cells. Every kind of
    transition gets its cells once per set: ``moves`` maps a transition's labels
    to its count's cell; ``ends`` maps a flow's last transition (its labels and
    reason) to its count's cell, its outcome's, and its histogram's sum and
    buckets. A histogram series gets its sum and every bucket at once, as
    prometheus-client's does, so every bucket is exported from the first
    observation. A forked child starts afresh on files with its own pid
    (``os.register_at_fork``).
    """

    def __init__(self, namespace: str, directory: str) -> None:
        self.namespace = namespace
        self.directory = directory  # as the environment said when the metrics were made
        self.count = _counter(self)
        self.forget()

    def forget(self) -> None:
        """Start with no file open (and, in a forked child, leave the parent's files alone)."""
        self.lock = threading.Lock()
        self.owner: int | None = None  # the thread that counts into ``moves`` without a lock
        self.moves: dict[tuple[Any, ...], _Cell] = {}
        self.ends: dict[tuple[Any, ...], _Plan] = {}
        self.other_moves: dict[tuple[Any, ...], _Cell] = {}
        self.other_ends: dict[tuple[Any, ...], _Plan] = {}
        self._refusals: dict[str, _Cell] = {}
        self._opened: dict[str, _MappedFile] = {}

    def _file(self, kind: str, owners: bool) -> _MappedFile:
        """One of this process's files, opened on first use (the caller holds the lock)."""
        name = f"{kind}_{os.getpid()}-{self.namespace}{'' if owners else '-threads'}.db"
        file = self._opened.get(name)
        if file is None:
            file = self._opened[name] = _MappedFile(os.path.join(self.directory, name))
        return file

    def _cell(self, owners: bool, metric: str, sample: str, labels: dict[str, str]) -> _Cell:
        help_text = {
            "transitions": _TRANSITIONS_HELP,
            "outcomes": _OUTCOMES_HELP,
            "flow_duration_seconds": _DURATIONS_HELP,
            "budget_refusals": _REFUSALS_HELP,
        }[metric]
        name = f"{self.namespace}_{metric}"
        file = self._file("histogram" if metric == "flow_duration_seconds" else "counter", owners)
        return file.cell(json.dumps([name, f"{name}_{sample}", labels, help_text], sort_keys=True))

    def refused(self, policy: str) -> None:
        with self.lock:
            cell = self._refusals.get(policy)
            if cell is None:
                cell = self._refusals[policy] = self._cell(
                    False, "budget_refusals", "total", {"policy": policy}
                )
            cell[0] += 1.0

    def count_locked(self, event: TransitionEvent) -> None:
        """Count a transition from a thread other than the owner, into the other threads' cells.

        The first thread to count becomes the owner: this first transition goes
        to the owner's cells, and its later ones are counted there without the
        lock (``ActivationMetrics.__call__``).
        """
        transition = event.transition
        with self.lock:
            if self.owner is None:
                self.owner = _get_ident()
                moves, ends = self.moves, self.ends
            else:
                moves, ends = self.other_moves, self.other_ends
            if not event.ends_flow:
                cell = moves.get((*transition[:3], event.policy))
                if cell is None:
                    cell = self._prepare(event, moves, ends)[0]
                cell[0] += 1.0
                return
            started = event.flow_started_at
            plan = ends.get((*transition[:3], event.policy, transition[4]))
            if plan is None or (started is not None and plan[2] is None):
                plan = self._prepare(event, moves, ends)
            moved, ended, total, buckets = plan
            moved[0] += 1.0
            ended[0] += 1.0
            if started is None or total is None:
                return
            seconds = transition[5] - started  # type: ignore[operator] # the core stamps it
            total[0] += seconds if seconds > 0.0 else 0.0
            buckets[bisect_left(DURATION_BUCKETS, seconds)][0] += 1.0

    def prepare(self, event: TransitionEvent) -> _Plan:
        """The owner's cells of the first transition of its kind (``__call__`` counts it)."""
        with self.lock:
            return self._prepare(event, self.moves, self.ends)

    def _prepare(
        self,
        event: TransitionEvent,
        moves: dict[tuple[Any, ...], _Cell],
        ends: dict[tuple[Any, ...], _Plan],
    ) -> _Plan:
        """The cells of a transition in one set, made on its first use (the caller holds the lock).

        The transition's count's cell first; then, for the last of a flow, its
        outcome's, and once it is timed, its histogram's sum and buckets.
        """
        source, dest, trigger, _attempt, reason, _at = event.transition
        policy = event.policy
        owners = moves is self.moves
        move = (source, dest, trigger, policy)
        cell = moves.get(move)
        if cell is None:
            labels = {
                "source": source._value_,
                "dest": dest._value_,
                "trigger": trigger._value_,
                "policy": policy,
            }
            cell = moves[move] = self._cell(owners, "transitions", "total", labels)
        if not event.ends_flow:
            return cell, cell, None, ()
        plan = ends.get((*move, reason))
        if plan is None:
            state = dest._value_
            outcome = {
                "state": state,
                "reason": "none" if reason is None else reason._name_,
                "policy": policy,
            }
            plan = (cell, self._cell(owners, "outcomes", "total", outcome), None, ())
        if event.flow_started_at is not None and not plan[3]:
            labels = {"state": dest._value_, "policy": policy}
            total = self._cell(owners, "flow_duration_seconds", "sum", labels)
            buckets = tuple(
                self._cell(owners, "flow_duration_seconds", "bucket", {**labels, "le": _bound(b)})
                for b in (*DURATION_BUCKETS, float("inf"))
            )
            plan = (plan[0], plan[1], total, buckets)
        ends[(*move, reason)] = plan
        return plan


def _counter(shared: _SharedSeries) -> Callable[[TransitionEvent], None]:
    """``shared.count``: one transition counted now, in this process's files.

    A plain function, not a method: it runs on every step of every visitor,
    and the publishing loop calls it directly (``_transition_call``). On the
    thread that owns the process's own cells (the first to count: an asyncio
    worker's loop), a dictionary look-up for the series' cells and a float
    increment (four when the flow ends), with no lock: no other thread writes
    those cells. Any other thread counts into cells of its own under the lock
    (``count_locked``). It reads ``shared``'s attributes on every call, so a
    forked child's fresh ones (``forget``) are the ones it counts into. Fields
    by position (a named tuple's index is cheaper than its name): the event's
    transition [1], policy [3], flow start [4], whether it ends the flow [5];
    the transition's source, dest, trigger [0:3], reason [4], time [5].
    """

    def count(event: TransitionEvent) -> None:
        if _get_ident() != shared.owner:
            shared.count_locked(event)
            return
        transition = event[1]
        if not event[5]:
            cell = shared.moves.get((transition[0], transition[1], transition[2], event[3]))
            if cell is None:
                cell = shared.prepare(event)[0]
            cell[0] += 1.0
            return
        started = event[4]
        plan = shared.ends.get(
            (transition[0], transition[1], transition[2], event[3], transition[4])
        )
        if plan is None or (started is not None and plan[2] is None):
            plan = shared.prepare(event)
        moved, ended, total, buckets = plan  # the transition's cell, the outcome's, the histogram's
        moved[0] += 1.0
        ended[0] += 1.0
        if started is None or total is None:
            return
        seconds = transition[5] - started  # type: ignore[operator] # the core stamps every entry
        total[0] += seconds if seconds > 0.0 else 0.0  # the duration's sum, then its bucket
        buckets[bisect_left(DURATION_BUCKETS, seconds)][0] += 1.0

    return count


_Plan: TypeAlias = "tuple[_Cell, _Cell, _Cell | None, tuple[_Cell, ...]]"
"""A flow's last transition: its count's cell, its outcome's, its duration's sum and buckets."""

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
            shared = _SHARED[namespace] = _SharedSeries(namespace, os.environ[MULTIPROC_ENV])
        return shared


def _forget_after_fork() -> None:
    global _SHARED_LOCK  # a forked child must not inherit a lock another thread held
    _SHARED_LOCK = threading.Lock()
    for shared in _SHARED.values():
        shared.forget()


if hasattr(os, "register_at_fork"):  # POSIX: nothing forks elsewhere
    os.register_at_fork(after_in_child=_forget_after_fork)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)

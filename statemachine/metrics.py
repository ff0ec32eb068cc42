"""Prometheus metrics as a transition listener (extra ``[metrics]``: prometheus-client).

Counters of transitions and of outcomes, and a histogram of flow durations,
all labelled with low-cardinality values only: states, triggers, reason
names and the policy's name — never a visitor id, a user id or a token.
In a web host, each worker process counts its own events (Prometheus sums
them across scrapes of each worker, or use prometheus-client's multiprocess
mode).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from statemachine.events import TransitionEvent

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

DURATION_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""A flow is a token request and an activation, plus retries and their backoffs."""


class ActivationMetrics:
    """A listener: ``session.add_listener(metrics)``, ``tracker.add_listener(metrics)``.

    Label children are cached per label set: a transition costs a dictionary
    lookup and an increment, not a label resolution.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "secured_activation",
    ) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError:
            raise ImportError(
                "metrics need prometheus-client: pip install 'secured-activation[metrics]'"
            ) from None
        self.registry = registry if registry is not None else CollectorRegistry()
        self.transitions = Counter(
            "transitions",
            "Transitions taken, by source, destination, trigger and policy.",
            ["source", "dest", "trigger", "policy"],
            namespace=namespace,
            registry=self.registry,
        )
        self.outcomes = Counter(
            "outcomes",
            "Flows brought to rest, by final state, reason and policy.",
            ["state", "reason", "policy"],
            namespace=namespace,
            registry=self.registry,
        )
        self.flow_duration = Histogram(
            "flow_duration_seconds",
            "Seconds from the start of a flow to its rest, by final state and policy.",
            ["state", "policy"],
            namespace=namespace,
            registry=self.registry,
            buckets=DURATION_BUCKETS,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def __call__(self, event: TransitionEvent) -> None:
        children = self._children
        key: tuple[Any, ...] = ("t", event.source, event.dest, event.trigger, event.policy)
        counter = children.get(key)
        if counter is None:
            counter = children[key] = self.transitions.labels(
                event.source.value, event.dest.value, event.trigger.value, event.policy
            )
        counter.inc()
        if not event.ends_flow:
            return
        reason = "none" if event.reason is None else event.reason.name
        key = ("o", event.dest, reason, event.policy)
        outcome = children.get(key)
        if outcome is None:
            outcome = children[key] = self.outcomes.labels(event.dest.value, reason, event.policy)
        outcome.inc()
        if event.flow_started_at is not None:
            key = ("d", event.dest, event.policy)
            duration = children.get(key)
            if duration is None:
                duration = children[key] = self.flow_duration.labels(event.dest.value, event.policy)
            duration.observe(max(0.0, event.at - event.flow_started_at))

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

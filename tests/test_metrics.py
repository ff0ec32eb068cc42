"""Metrics: the Prometheus listener counts what the transitions say.

On real sessions with real tokens.
"""

from __future__ import annotations

from functools import partial

from policies import DefensivePolicy
from statemachine import (
    ActivationSession,
    LocalActivator,
)
from statemachine.signals.events import TransitionEvent
from statemachine.signals.metrics import ActivationMetrics
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

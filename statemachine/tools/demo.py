"""The main job: every named scenario, on the embedded default, under each policy.

Fresh throwaway keys, real JWEs from ``TokenIssuer``, ``LocalActivator``
standing in for the platform, and the real ``AsyncActivationSession``. Only
the platform's *misbehaviour* (flaky, down) is simulated, by wrapping the
local activator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from policies import AnonymousFallbackPolicy, DefensivePolicy, RetryPolicy
from statemachine.hostcalls.activator import LocalActivator
from statemachine.protocol.errors import ActivationError
from statemachine.protocol.options import AuthenticationOption
from statemachine.protocol.policy import ActivationPolicy
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.results import ActivationResult, HistoryEntry
from statemachine.protocol.states import State, Trigger
from statemachine.protocol.table import TRANSITIONS
from statemachine.sessions import AsyncActivationSession
from statemachine.tokens import TokenIssuer, TokenVerifier, generate_rsa

ISSUER = "https://brand.example"
# Short delays so the demo shows real backoff and still finishes in about a second.
DEMO_RETRY = RetryPolicy(base_delay=0.02, multiplier=2.0, max_delay=0.1, jitter=0.1)


def demo_policy(name: str) -> ActivationPolicy:
    if name == "defensive":
        return DefensivePolicy(retry=DEMO_RETRY, token_timeout=2.0, activation_timeout=2.0)
    return AnonymousFallbackPolicy(retry=DEMO_RETRY, token_timeout=2.0, activation_timeout=2.0)


POLICY_NAMES = ("defensive", "anonymous")


class Platform:
    """Throwaway keys for the brand, the platform and an impostor, made once per demo run."""

    def __init__(self) -> None:
        brand, platform, impostor = generate_rsa(), generate_rsa(), generate_rsa()
        self.issuer = TokenIssuer(brand, platform, ISSUER)
        self.impostor = TokenIssuer(impostor, platform, ISSUER)
        self.stale = TokenIssuer(brand, platform, ISSUER, clock=lambda: time.time() - 600)
        self.activator = LocalActivator(TokenVerifier(platform, brand, issuer=ISSUER))


class FlakyPlatform:
    """The local platform, refusing the first ``failures`` secured activations (server error)."""

    def __init__(self, inner: LocalActivator, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def activate(self, option: AuthenticationOption) -> None:
        await asyncio.sleep(0.001)  # a network round trip, of sorts
        if option.is_secured and self.failures > 0:
            self.failures -= 1
            raise ActivationError(FailureReason.SERVER_ERROR)
        self.inner.activate(option)


@dataclass
class Step:
    call: str
    transitions: list[HistoryEntry]
    results: list[ActivationResult]


@dataclass
class Run:
    scenario: str
    policy: str
    steps: list[Step] = field(default_factory=list)
    final_state: State = State.UNAUTHENTICATED

    @property
    def attempts(self) -> int:
        return sum(r.attempts for s in self.steps for r in s.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "final_state": self.final_state.value,
            "attempts": self.attempts,
            "steps": [
                {
                    "call": s.call,
                    "transitions": [e.to_dict() for e in s.transitions],
                    "results": [r.to_safe_dict() for r in s.results],
                }
                for s in self.steps
            ],
        }


class Driver:
    """Runs host calls on a session and records what each one did."""

    def __init__(self, session: AsyncActivationSession, run: Run) -> None:
        self.session = session
        self.run = run

    async def call(self, name: str, *calls: Callable[[], Awaitable[ActivationResult]]) -> None:
        before = len(self.session.history)
        results = list(await asyncio.gather(*(c() for c in calls)))
        self.run.steps.append(Step(name, list(self.session.history[before:]), results))

    async def activate(self) -> None:
        await self.call("activate()", self.session.activate)

    async def logout(self) -> None:
        source = self.session.state
        await self.session.logout()
        entry = HistoryEntry(source, self.session.state, Trigger.LOGOUT, 0, None)
        self.run.steps.append(Step("logout()", [entry], []))


Body = Callable[[Driver], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    provider: Callable[[Platform], Callable[[], Any]]
    activator: Callable[[Platform], Any] = lambda p: p.activator
    body: Body = Driver.activate


def _sign_in_fails() -> Callable[[], Any]:
    async def provider() -> str:
        raise ConnectionError("the brand's sign-in service is down")

    return provider


def _issue(issuer: TokenIssuer) -> Callable[[], Any]:
    async def provider() -> str:
        return issuer.issue("visitor-42", {"firstName": "Ada"})

    return provider


async def _double_login(d: Driver) -> None:
    await d.call("activate() twice at once", d.session.activate, d.session.activate)


async def _twice_then_logout(d: Driver) -> None:
    await d.activate()
    await d.activate()
    await d.logout()
    await d.activate()


async def _anonymous_signs_in(d: Driver) -> None:
    await d.call("activate_anonymously()", d.session.activate_anonymously)
    await d.activate()


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "happy-path",
        "the visitor is signed in; the platform accepts the token",
        lambda p: _issue(p.issuer),
    ),
    Scenario(
        "backend-down",
        "the brand's backend cannot sign the visitor in: no token",
        lambda _platform: _sign_in_fails(),
    ),
    Scenario(
        "wrong-key",
        "the token is signed with a key the platform does not know",
        lambda p: _issue(p.impostor),
    ),
    Scenario(
        "expired-token",
        "every token the backend mints has already expired",
        lambda p: _issue(p.stale),
    ),
    Scenario(
        "flaky-platform",
        "the platform fails twice with a server error, then works",
        lambda p: _issue(p.issuer),
        lambda p: FlakyPlatform(p.activator, 2),
    ),
    Scenario(
        "platform-down",
        "the platform answers every activation with a server error",
        lambda p: _issue(p.issuer),
        lambda p: FlakyPlatform(p.activator, 10**6),
    ),
    Scenario(
        "double-login",
        "the page calls activate twice before the first one finished",
        lambda p: _issue(p.issuer),
        body=_double_login,
    ),
    Scenario(
        "activate-twice-then-logout",
        "activate, activate again, logout, activate",
        lambda p: _issue(p.issuer),
        body=_twice_then_logout,
    ),
    Scenario(
        "anonymous-signs-in",
        "an anonymous visitor signs in and is upgraded",
        lambda p: _issue(p.issuer),
        body=_anonymous_signs_in,
    ),
)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


async def run_scenario(scenario: Scenario, policy: str, platform: Platform) -> Run:
    session = AsyncActivationSession(
        scenario.provider(platform), scenario.activator(platform), demo_policy(policy)
    )
    run = Run(scenario.name, policy)
    await scenario.body(Driver(session, run))
    run.final_state = session.state
    return run


async def run_all(scenarios: list[Scenario], policies: list[str]) -> list[Run]:
    platform = Platform()
    return [await run_scenario(s, p, platform) for s in scenarios for p in policies]


def why(entry: HistoryEntry) -> str:
    """The table's own explanation of a transition (one source of truth for every text)."""
    for row in TRANSITIONS:
        if (row.source, row.trigger, row.dest) == (entry.source, entry.trigger, entry.dest):
            return row.why
    return ""

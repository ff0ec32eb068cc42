"""Drive either tracker face with the same blocking calls, on either store.

The async tracker runs on one event loop kept for the whole test (its Redis
connections belong to that loop); the blocking tracker is called directly.
Every rule test runs four ways: {async, blocking} x {memory, redis}.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from statemachine import (
    ActivationTracker,
    AsyncActivationTracker,
    ReportReply,
    TokenReply,
    TrackerView,
)
from statemachine.protocol.results import FAILURE, SUCCESS


class Clock:
    """A settable wall clock, so leases can run out without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class CountingProvider:
    """A token provider over a real issuer: counts its calls, can be told to fail."""

    def __init__(self, mint: Callable[[], str]) -> None:
        self.mint = mint
        self.calls = 0
        self.fail = False

    def __call__(self) -> str | None:
        self.calls += 1
        return None if self.fail else self.mint()


class Face:
    def __init__(self, kind: str, policy: Any, store: Any, clock: Clock) -> None:
        self.kind = kind
        self.loop: asyncio.AbstractEventLoop | None = None
        if kind == "async":
            self.loop = asyncio.new_event_loop()
            self.tracker: Any = AsyncActivationTracker(policy, store, clock=clock)
        else:
            self.tracker = ActivationTracker(policy, store, clock=clock)

    def _run(self, value: Any) -> Any:
        if self.loop is None:
            return value
        return self.loop.run_until_complete(value)

    def token(self, visitor: str, flow: str, provider: Any) -> TokenReply:
        result: TokenReply = self._run(self.tracker.token_request(visitor, flow, provider))
        return result

    def report(self, visitor: str, flow: str, activation: Any) -> ReportReply:
        result: ReportReply = self._run(self.tracker.report(visitor, flow, activation))
        return result

    def logout(self, visitor: str) -> TrackerView | None:
        result: TrackerView | None = self._run(self.tracker.logout(visitor))
        return result

    def view(self, visitor: str) -> TrackerView | None:
        result: TrackerView | None = self._run(self.tracker.view(visitor))
        return result

    def close(self) -> None:
        store = self.tracker.store
        if self.loop is not None:
            if hasattr(store, "aclose"):
                self.loop.run_until_complete(store.aclose())
            self.loop.close()
        elif hasattr(store, "close"):
            store.close()


def callback(succeeded: bool, option_type: str, reason: str | None = None) -> dict[str, Any]:
    """The tag's callback object, as the page posts it."""
    inner: dict[str, Any] = {
        "option": {"type": option_type},
        "status": SUCCESS if succeeded else FAILURE,
    }
    if reason is not None:
        inner["reason"] = reason
    return {"authentication": inner}


def new_flow() -> str:
    return os.urandom(12).hex()


FLOWS = ["f0", "f1", "f2"]
"""The flows generated operations pick from: few, so that they collide."""


def tracker_operations(waits: list[float]) -> Any:
    """A hypothesis strategy of one tracker operation, as ``(kind, flow, detail)``: a token
    request (provider answers or not), a report (accepted or not; secured or anonymous), a
    logout, or a wait of one of ``waits`` seconds on the test's clock."""
    from hypothesis import strategies as st

    from statemachine.protocol.options import ANONYMOUS, SECURED

    return st.one_of(
        st.tuples(st.just("token"), st.sampled_from(FLOWS), st.booleans()),
        st.tuples(
            st.just("report"),
            st.sampled_from(FLOWS),
            st.tuples(st.booleans(), st.sampled_from([SECURED, ANONYMOUS])),
        ),
        st.tuples(st.just("logout"), st.none(), st.none()),
        st.tuples(st.just("wait"), st.none(), st.sampled_from(waits)),
    )

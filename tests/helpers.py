"""Scripted adapters and policies shared by the tests.

The *platform* side is scripted here (as the issues allow); the engine,
machine, sessions and tokens under test are always the real ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from policies import AnonymousFallbackPolicy, DefensivePolicy, RetryPolicy
from statemachine import ActivationError, AuthenticationOption, FailureReason, State

FAST_RETRY = RetryPolicy(base_delay=0.0, max_delay=0.0, jitter=0.0)


def defensive(**kw: Any) -> DefensivePolicy:
    kw.setdefault("retry", FAST_RETRY)
    return DefensivePolicy(**kw)


def anonymous(**kw: Any) -> AnonymousFallbackPolicy:
    kw.setdefault("retry", FAST_RETRY)
    return AnonymousFallbackPolicy(**kw)


POLICIES = {"defensive": defensive, "anonymous": anonymous}

# What a scripted provider returns: a token string, None (provider failure),
# an exception to raise, or HANG (block until released).
HANG = object()


@dataclass
class Script:
    """Outcomes handed out in order; the last one repeats once the list runs out."""

    provider: list[Any] = field(default_factory=lambda: ["token-1"])
    secured: list[Any] = field(default_factory=lambda: [None])  # None: success; a reason: failure
    anonymous: list[Any] = field(default_factory=lambda: [None])
    seen_states: list[State] = field(default_factory=list)
    activator_calls: list[AuthenticationOption] = field(default_factory=list)
    provider_calls: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def _next(items: list[Any], index: int) -> Any:
        return items[min(index, len(items) - 1)]


class ScriptedAdapters:
    """A token provider and an activator, sync or async, following a Script.

    Each records the session state it observed when called, so a test can
    check the machine's state at every step of a flow.
    """

    def __init__(self, script: Script, *, is_async: bool) -> None:
        self.script = script
        self.session: Any = None
        self.is_async = is_async
        self.provider: Any = self._async_provider if is_async else self._sync_provider
        self.activator: Any = _AsyncActivator(self) if is_async else _SyncActivator(self)

    def _observe(self) -> None:
        if self.session is not None:
            self.script.seen_states.append(self.session.state)

    def _provide(self) -> Any:
        s = self.script
        self._observe()
        value = s._next(s.provider, s.provider_calls)
        s.provider_calls += 1
        return value

    def _activation_outcome(self, option: AuthenticationOption) -> Any:
        s = self.script
        self._observe()
        s.activator_calls.append(option)
        if option.is_secured:
            return s._next(s.secured, sum(1 for o in s.activator_calls if o.is_secured) - 1)
        return s._next(s.anonymous, sum(1 for o in s.activator_calls if not o.is_secured) - 1)

    def _sync_provider(self) -> Any:
        value = self._provide()
        if value is HANG:
            self.script.entered.set()
            self.script.release.wait(30)
            return None
        if isinstance(value, BaseException):
            raise value
        return value

    async def _async_provider(self) -> Any:
        value = self._provide()
        if value is HANG:
            self.script.entered.set()
            await asyncio.sleep(3600)
        if isinstance(value, BaseException):
            raise value
        return value


def _raise_for(outcome: Any) -> None:
    if outcome is None:
        return
    if isinstance(outcome, FailureReason):
        raise ActivationError(outcome)
    if isinstance(outcome, BaseException):
        raise outcome
    raise AssertionError(f"bad script outcome {outcome!r}")


class _SyncActivator:
    def __init__(self, owner: ScriptedAdapters) -> None:
        self.owner = owner

    def activate(self, option: AuthenticationOption) -> None:
        outcome = self.owner._activation_outcome(option)
        if outcome is HANG:
            self.owner.script.entered.set()
            self.owner.script.release.wait(30)
            raise ActivationError(FailureReason.SERVER_ERROR)
        _raise_for(outcome)


class _AsyncActivator:
    def __init__(self, owner: ScriptedAdapters) -> None:
        self.owner = owner

    async def activate(self, option: AuthenticationOption) -> None:
        outcome = self.owner._activation_outcome(option)
        if outcome is HANG:
            self.owner.script.entered.set()
            await asyncio.sleep(3600)
        _raise_for(outcome)


def transitions_of(history: Iterable[Any]) -> list[tuple[str, str, str]]:
    return [(e.source.value, e.trigger.value, e.dest.value) for e in history]

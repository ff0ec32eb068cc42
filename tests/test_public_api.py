"""The public names hosts rely on (README, docs/design.md), importable as documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from policies import DefensivePolicy
from statemachine import ActivationSession, AuthenticationOption, State

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_import() -> None:
    from policies import (  # noqa: F401
        AnonymousFallbackPolicy,
        DefensivePolicy,
        PolicyError,
        RetryPolicy,
        load_policy,
    )
    from statemachine import (  # noqa: F401
        ActivationError,
        ActivationResult,
        ActivationSession,
        Activator,
        AsyncActivationSession,
        AuthenticationOption,
        FailureReason,
        LocalActivator,
        State,
    )
    from statemachine.tokens import Claims, TokenError, TokenIssuer, TokenVerifier  # noqa: F401

    assert [s.value for s in State] == [
        "unauthenticated",
        "fetching_token",
        "activating",
        "retrying",
        "activating_anonymous",
        "authenticated",
        "anonymous",
        "blocked",
    ]
    assert isinstance(State.BLOCKED, str)


def test_default_policy_is_defensive() -> None:
    class Ok:
        def activate(self, option: AuthenticationOption) -> None:
            return None

    session = ActivationSession(lambda: None, Ok())
    assert session.policy == DefensivePolicy()
    assert session.activate().state is State.BLOCKED


def test_session_diagram_marks_current_state_and_path() -> None:
    class Ok:
        def activate(self, option: Any) -> None:
            return None

    session = ActivationSession(lambda: None, Ok())
    before = session.diagram()
    assert "class unauthenticated current" in before
    assert "visited" not in before
    session.activate()
    after = session.diagram()
    assert "class blocked current" in after
    visited = re.search(r"class (\S+) visited", after)
    assert visited is not None
    assert set(visited.group(1).split(",")) == {"unauthenticated", "fetching_token"}
    assert after.startswith("---\ntitle: secured activation")


PUBLIC = {
    "ActivationError": "statemachine.protocol.errors",
    "ActivationPolicy": "statemachine.protocol.policy",
    "ActivationResult": "statemachine.protocol.results",
    "ActivationSession": "statemachine.sessions",
    "ActivationTracker": "statemachine.tracking._faces",
    "Activator": "statemachine.hostcalls.activator",
    "Answer": "statemachine.protocol.replies",
    "AsyncActivationSession": "statemachine.sessions",
    "AsyncActivationTracker": "statemachine.tracking._faces",
    "AuthenticationOption": "statemachine.protocol.options",
    "FailureReason": "statemachine.protocol.reasons",
    "Fallback": "statemachine.protocol.policy",
    "HistoryEntry": "statemachine.protocol.results",
    "LocalActivator": "statemachine.hostcalls.activator",
    "ReportReply": "statemachine.protocol.replies",
    "RetryStrategy": "statemachine.protocol.policy",
    "SnapshotError": "statemachine.engine.snapshots",
    "State": "statemachine.protocol.states",
    "StoreError": "statemachine.stores.base",
    "TokenProvider": "statemachine.hostcalls._calls",
    "TokenReply": "statemachine.protocol.replies",
    "TrackerInputError": "statemachine.tracking._rules",
    "TrackerView": "statemachine.protocol.replies",
    "TransitionEvent": "statemachine.signals.events",
    "TransitionNotAllowed": "statemachine.protocol.errors",
    "Trigger": "statemachine.protocol.states",
    "WorkerPool": "statemachine.hostcalls.workers",
    "fingerprint": "statemachine.protocol.options",
}
"""The package's public surface, pinned: a name added or dropped is a decision, made here.

Each name maps to the module that defines it (the table the layout change updates)."""


def test_the_public_surface_is_pinned() -> None:
    import importlib

    import statemachine

    assert sorted(statemachine.__all__) == sorted(PUBLIC)
    assert len(statemachine.__all__) == len(set(statemachine.__all__))
    for name, module in PUBLIC.items():
        assert getattr(statemachine, name) is getattr(importlib.import_module(module), name), name


def test_documented_subpackages_keep_their_names() -> None:
    """Every import path the README documents stays importable."""
    from statemachine.activator import LocalActivator  # noqa: F401
    from statemachine.events import TransitionEvent, log_transition  # noqa: F401
    from statemachine.metrics import ActivationMetrics  # noqa: F401
    from statemachine.stores import MemoryStore, RedisStore, StoreError  # noqa: F401
    from statemachine.tokens import Claims, TokenError, TokenIssuer, TokenVerifier  # noqa: F401
    from statemachine.web import activation_routes, inspector_routes  # noqa: F401
    from statemachine.workers import WorkerPool, default_pool  # noqa: F401


MOVED = {
    "statemachine.activator": "statemachine.hostcalls.activator",
    "statemachine.events": "statemachine.signals.events",
    "statemachine.metrics": "statemachine.signals.metrics",
    "statemachine.workers": "statemachine.hostcalls.workers",
}
"""Documented module paths whose modules moved into the subpackages: the same module."""


@pytest.mark.parametrize(("documented", "home"), sorted(MOVED.items()))
def test_a_documented_path_is_the_moved_module_itself(documented: str, home: str) -> None:
    """In a fresh interpreter, importing the documented path first: one module, two names."""
    code = (
        f"import importlib, sys; old = importlib.import_module({documented!r}); "
        f"import {home} as new; "
        f"assert old is new and sys.modules[{documented!r}] is new, old; "
        f"assert old.__name__ == {home!r}; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
    stub = ROOT / "statemachine" / (documented.rsplit(".", 1)[1] + ".pyi")
    assert f"from {home} import *" in stub.read_text(encoding="utf-8")


def test_the_command_keeps_its_old_entry_point() -> None:
    """Console scripts installed before the regrouping import ``statemachine.cli:run``."""
    from statemachine.cli import run
    from statemachine.tools import cli

    assert run is cli.run

"""The public names hosts rely on (README, docs/design.md), importable as documented."""

from __future__ import annotations

import re
from typing import Any

from policies import DefensivePolicy
from statemachine import ActivationSession, AuthenticationOption, State


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

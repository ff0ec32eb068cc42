"""Hostile policies and provider output: typed, one-line answers, never a stray exception."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from policies import PolicyError, RetryPolicy, load_policy
from statemachine import (
    ActivationSession,
    AsyncActivationSession,
    AuthenticationOption,
    FailureReason,
    State,
)
from statemachine.protocol.policy import Fallback
from tests.helpers import FAST_RETRY, defensive


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"token_timeout": 10**400}, "token_timeout"),
        ({"retry": {"max_retries": 10**5000}}, "retry.max_retries"),
        ({"retry": {"base_delay": 10**400}}, "retry.base_delay"),
        ({"retry": {"retry_on": {"SERVER_ERROR": False}}}, "retry.retry_on"),
        ({"retry": {"retry_on": [[[[["SERVER_ERROR"]]]]]}}, "retry.retry_on"),
        ({1: "x"}, "source"),
        (None, "source"),
        (42, "source"),
        (b"fallback = 'anonymous'", "source"),
    ],
    ids=[
        "huge-timeout",
        "huge-int",
        "huge-delay",
        "retry-on-mapping",
        "nested-retry-on",
        "int-key",
        "none",
        "int",
        "bytes",
    ],
)
def test_bad_sources_are_policy_errors_naming_the_field(source: Any, field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(source)
    assert caught.value.field == field
    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    "text",
    [
        "token_timeout = " + "9" * 5000,
        "[retry]\nretry_on = " + "[" * 5000 + "]" * 5000,
        "fallback = 'anonymous'\nfallback = 'defensive'",
        "\xff\xfe",
    ],
    ids=["5000-digits", "deep-array", "duplicate-key", "not-utf8"],
)
def test_bad_toml_files_are_policy_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.field == "file"
    assert len(str(caught.value)) < 600


@dataclass(frozen=True)
class Custom:
    token_timeout: Any = 1.0
    activation_timeout: Any = 1.0
    retry: Any = FAST_RETRY
    name: str = "custom"
    on_token_failure: Fallback = Fallback.BLOCK
    on_activation_failure: Fallback = Fallback.BLOCK


class Retry:
    def __init__(self, delay: float = 0.0, max_retries: Any = 1) -> None:
        self._delay = delay
        self.max_retries = max_retries

    def should_retry(self, reason: FailureReason) -> bool:
        return True

    def delay(self, retry: int) -> float:
        return self._delay


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        (Custom(token_timeout=math.inf), ValueError),
        (Custom(token_timeout=math.nan), ValueError),
        (Custom(activation_timeout=-1.0), ValueError),
        (Custom(activation_timeout=1e10), ValueError),
        (Custom(token_timeout="5"), TypeError),
        (Custom(retry=Retry(delay=math.inf)), ValueError),
        (Custom(retry=Retry(delay=-1.0)), ValueError),
        (Custom(retry=Retry(max_retries=10**9)), ValueError),
        (Custom(retry=object()), TypeError),
    ],
    ids=[
        "inf",
        "nan",
        "negative",
        "absurd",
        "text",
        "inf-delay",
        "negative-delay",
        "huge-budget",
        "no-retry",
    ],
)
def test_custom_policies_are_checked_at_construction(policy: Any, error: type) -> None:
    for face in (ActivationSession, AsyncActivationSession):
        with pytest.raises(error) as caught:
            face(
                lambda: "t", object.__new__(type("A", (), {"activate": lambda s, o: None})), policy
            )
        assert "policy." in str(caught.value)


class Hostile:
    """Provider output whose inspection runs host code that raises."""

    class Mapping(dict):  # type: ignore[type-arg]
        def get(self, *args: Any) -> Any:
            raise RuntimeError("boom")

        def __getitem__(self, key: Any) -> Any:
            raise RuntimeError("boom")

    class Text(str):
        __slots__ = ()

        def strip(self, *args: Any) -> str:
            raise RuntimeError("boom")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("boom")

        __hash__ = str.__hash__


class Activator:
    def __init__(self) -> None:
        self.options: list[AuthenticationOption] = []

    def activate(self, option: AuthenticationOption) -> None:
        self.options.append(option)


@pytest.mark.parametrize(
    "output", [Hostile.Mapping(), Hostile.Text("token")], ids=["mapping", "str-subclass"]
)
def test_hostile_provider_output_is_the_providers_failure(output: Any) -> None:
    calls: list[Any] = []
    activator = Activator()
    session = ActivationSession(lambda: output, activator, defensive())
    result = session.activate(callback=calls.append)
    assert calls == [result]
    if isinstance(output, str):  # a str subclass is read as its plain text
        assert result.state is State.AUTHENTICATED
        assert type(activator.options[0].token) is str
    else:
        assert (result.state, result.reason) == (State.BLOCKED, FailureReason.INVALID_OPTION)

    async def run() -> Any:
        return await AsyncActivationSession(lambda: output, Activator(), defensive()).activate(
            callback=calls.append
        )

    again = asyncio.run(run())
    assert calls[-1] is again
    assert again.state is result.state


def test_retry_policy_refuses_a_mapping_for_retry_on() -> None:
    with pytest.raises(PolicyError, match="retry_on"):
        RetryPolicy(retry_on={"SERVER_ERROR": False})  # type: ignore[arg-type]


def test_a_providers_own_cancelled_error_is_its_failure_not_a_cancellation(
    issuer: Any, verifier: Any
) -> None:
    """A provider awaiting something cancelled (a closed client's request) raises
    ``CancelledError`` though nobody cancelled the flow: the policy decides, as for any
    provider failure, and ``activate`` answers instead of raising a cancellation."""
    from policies import AnonymousFallbackPolicy
    from statemachine import LocalActivator

    async def cancelled_inside() -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        future.cancel()
        return await future

    def raises_cancelled() -> str:
        raise asyncio.CancelledError

    policy = AnonymousFallbackPolicy(retry=FAST_RETRY)
    for provider in (cancelled_inside, raises_cancelled):
        calls: list[Any] = []

        async def run(provider: Any = provider, calls: list[Any] = calls) -> Any:
            session = AsyncActivationSession(provider, LocalActivator(verifier), policy)
            return await session.activate(callback=calls.append)

        result = asyncio.run(run())
        assert (result.state, result.reason) == (State.ANONYMOUS, FailureReason.TOKEN_UNAVAILABLE)
        assert calls == [result]
        blocking = ActivationSession(provider, LocalActivator(verifier), policy)
        assert blocking.activate().state is State.ANONYMOUS


def test_a_policy_file_must_be_a_regular_file_of_bounded_size(tmp_path: Path) -> None:
    """What a key file must be, a policy file must be too: no FIFO, no device, no giant.

    (/dev/zero, read whole until memory runs out, is tried by the CLI's test, in a
    process of bounded memory.)
    """
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "policy.fifo"
        os.mkfifo(fifo)

        def writer() -> None:  # so that the old code's open() returns: a bounded test
            with contextlib.suppress(OSError), open(fifo, "w") as handle:
                handle.write('fallback = "anonymous"\n')

        feeding = threading.Thread(target=writer, daemon=True)
        feeding.start()
        with pytest.raises(PolicyError, match=r"file: .* not a regular file"):
            load_policy(fifo)
        with contextlib.suppress(OSError):  # let the writer go if nothing opened the FIFO
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        feeding.join(10)
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (1 << 20) + '\nfallback = "anonymous"\n')
    with pytest.raises(PolicyError, match=r"file: .* over 65536 bytes"):
        load_policy(huge)
    fits = tmp_path / "fits.toml"
    fits.write_text("# " + "x" * 60_000 + '\nfallback = "anonymous"\n')
    assert load_policy(fits).name == "anonymous"

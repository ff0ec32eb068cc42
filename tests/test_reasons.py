from __future__ import annotations

import pytest

from statemachine import FailureReason

PLATFORM_WORDING = {
    FailureReason.INVALID_OPTION: "A valid authentication option must be provided",
    FailureReason.SERVER_ERROR: "Failed to fetch authentication with a server error",
    FailureReason.LOGIN_ONGOING: "A login is already ongoing",
    FailureReason.ALREADY_ACTIVATED: "Can't activate twice, please logout first",
}


def test_platform_messages_are_verbatim() -> None:
    for reason, text in PLATFORM_WORDING.items():
        assert reason.message == text


@pytest.mark.parametrize("reason", list(FailureReason))
def test_every_message_maps_back(reason: FailureReason) -> None:
    assert FailureReason.from_message(reason.message) is reason
    assert FailureReason.from_message(reason.name) is reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("An activation is already ongoing", FailureReason.LOGIN_ONGOING),
        ("  a login is already ongoing. ", FailureReason.LOGIN_ONGOING),
        ("Can't activate twice", FailureReason.ALREADY_ACTIVATED),
        ("something nobody has seen", FailureReason.SERVER_ERROR),
        ("", FailureReason.SERVER_ERROR),
    ],
)
def test_wild_wordings(text: str, reason: FailureReason) -> None:
    assert FailureReason.from_message(text) is reason


def test_messages_are_unique() -> None:
    assert len({r.message for r in FailureReason}) == len(FailureReason)

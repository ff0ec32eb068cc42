from __future__ import annotations

import pytest

from statemachine import FailureReason
from statemachine.protocol.reasons import REMEDIATIONS

PLATFORM_WORDING = {
    FailureReason.INVALID_OPTION: "A valid authentication option must be provided",
    FailureReason.SERVER_ERROR: "Failed to fetch authentication with a server error",
    FailureReason.LOGIN_ONGOING: "A login is already ongoing",
    FailureReason.ALREADY_ACTIVATED: "Can't activate twice, please logout first",
    FailureReason.INVALID_CREDENTIALS: "Failed to authenticate visitor from credentials",
}

# Every failure message the platform publishes, as the tag may send it, and what it means.
PUBLISHED = [
    ("A valid authentication option must be provided", FailureReason.INVALID_OPTION),
    ("An activation is already ongoing", FailureReason.LOGIN_ONGOING),
    ("A login is already ongoing", FailureReason.LOGIN_ONGOING),
    ("Can't activate twice, please logout first", FailureReason.ALREADY_ACTIVATED),
    ("Failed to fetch authentication with a server error", FailureReason.SERVER_ERROR),
    ("Failed to authenticate visitor from credentials", FailureReason.INVALID_CREDENTIALS),
    (
        "Failed to authenticate visitor from credentials: the token could not be read",
        FailureReason.INVALID_CREDENTIALS,
    ),
    ("Failed to authenticate visitor from credentials…", FailureReason.INVALID_CREDENTIALS),
    ("Malformed token", FailureReason.MALFORMED_TOKEN),
    ("Invalid key", FailureReason.INVALID_SIGNATURE),
    ("Expired token", FailureReason.EXPIRED_TOKEN),
]


def test_platform_messages_are_verbatim() -> None:
    for reason, text in PLATFORM_WORDING.items():
        assert reason.message == text


@pytest.mark.parametrize(("text", "reason"), PUBLISHED)
def test_every_published_message_is_recognised(text: str, reason: FailureReason) -> None:
    assert FailureReason.from_message(text) is reason
    assert FailureReason.from_message(text.upper()) is reason
    assert FailureReason.from_message(f"  {text}. ") is reason


@pytest.mark.parametrize("reason", list(FailureReason))
def test_every_message_maps_back(reason: FailureReason) -> None:
    assert FailureReason.from_message(reason.message) is reason
    assert FailureReason.from_message(reason.name) is reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("  a login is already ongoing. ", FailureReason.LOGIN_ONGOING),
        ("Can't activate twice", FailureReason.ALREADY_ACTIVATED),
        ("something nobody has seen", FailureReason.UNKNOWN),
        ("", FailureReason.UNKNOWN),
        (None, FailureReason.UNKNOWN),
        (42, FailureReason.UNKNOWN),
    ],
)
def test_wild_wordings(text: object, reason: FailureReason) -> None:
    """A text nobody can read is UNKNOWN, never a fault nobody reported."""
    assert FailureReason.from_message(text) is reason


def test_messages_are_unique() -> None:
    assert len({r.message for r in FailureReason}) == len(FailureReason)


@pytest.mark.parametrize("reason", list(FailureReason))
def test_every_reason_has_a_one_line_remediation(reason: FailureReason) -> None:
    text = reason.remediation
    assert text is REMEDIATIONS[reason]
    assert text.strip() == text
    assert "\n" not in text
    assert 20 <= len(text) <= 120
    assert text[0].isupper()
    assert text.endswith((".", "?"))
    assert text != reason.message


@pytest.mark.parametrize(
    ("reason", "must_name"),
    [
        (FailureReason.INVALID_SIGNATURE, "private key"),
        (FailureReason.DECRYPTION_FAILED, "public key"),
        (FailureReason.INVALID_CREDENTIALS, "secured authentication is enabled"),
        (FailureReason.INVALID_CLAIMS, "userId"),
        (FailureReason.LOGIN_ONGOING, "Await"),
        (FailureReason.ALREADY_ACTIVATED, "Log out first"),
        (FailureReason.EXPIRED_TOKEN, "clock"),
        (FailureReason.TOKEN_UNAVAILABLE, "signed in"),
    ],
)
def test_remediations_say_what_to_check(reason: FailureReason, must_name: str) -> None:
    assert must_name in reason.remediation


def test_remediations_are_distinct() -> None:
    assert len(set(REMEDIATIONS.values())) == len(FailureReason)

"""The platform's claims, and the rules a userId must follow."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

PREFIX: Final = "https://iadvize.com/"
USER_ID: Final = PREFIX + "userId"
VISITOR_DATA: Final = PREFIX + "visitorData"
MAX_USER_ID: Final = 255
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
VISITOR_FIELDS: Final = (
    "firstName",
    "lastName",
    "email",
    "phoneNumber",
    "address",
    "zipCode",
    "city",
    "country",
)


def user_id_problem(user_id: object) -> str | None:
    """Why ``user_id`` cannot be a platform userId, or ``None`` if it can."""
    if not isinstance(user_id, str):
        return f"userId must be a string, got {type(user_id).__name__}"
    if not user_id.strip():
        return "userId must not be empty"
    if len(user_id) > MAX_USER_ID:
        return f"userId has {len(user_id)} characters, more than {MAX_USER_ID}"
    if _CONTROL.search(user_id):
        return "userId must not contain control characters"
    return None


def visitor_data_problem(data: object) -> str | None:
    if not isinstance(data, Mapping):
        return f"visitorData must be a JSON object, got {type(data).__name__}"
    if not all(isinstance(key, str) for key in data):
        return "visitorData keys must be strings"
    try:
        json.dumps(dict(data), allow_nan=False)
    except (TypeError, ValueError):
        return "visitorData must contain only JSON values"
    return None


@dataclass(frozen=True, slots=True)
class Claims:
    """What the platform reads from a valid token. Personal data stays out of ``repr``."""

    user_id: str = field(repr=False)
    visitor_data: Mapping[str, Any] | None = field(repr=False)
    issuer: str | None
    expires_at: datetime
    issued_at: datetime | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Claims:
        iat = payload.get("iat")
        return cls(
            user_id=payload[USER_ID],
            visitor_data=payload.get(VISITOR_DATA),
            issuer=payload.get("iss"),
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
            issued_at=None if iat is None else datetime.fromtimestamp(iat, UTC),
        )

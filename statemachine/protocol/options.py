"""Authentication options, and the fingerprint that stands in for a token."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

SECURED: Final = "SECURED_AUTHENTICATION"
ANONYMOUS: Final = "ANONYMOUS_AUTHENTICATION"


def fingerprint(token: str | bytes | None) -> str | None:
    """A short, stable, non-reversible name for a token, safe for logs and output.

    Eight bytes of SHA-256 identify a token among the few a session sees
    without letting anyone rebuild or replay it.
    """
    if token is None:
        return None
    data = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class AuthenticationOption:
    """What the tag is asked to activate with.

    The token is excluded from ``repr`` and equality-free printing: it is a
    credential, and a stray ``print(option)`` must not leak it.
    """

    type: str
    token: str | None = field(default=None, repr=False)
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def secured(cls, token: str | None) -> AuthenticationOption:
        return cls(SECURED, token)

    @classmethod
    def anonymous(cls) -> AuthenticationOption:
        return cls(ANONYMOUS)

    @property
    def is_secured(self) -> bool:
        return self.type == SECURED

    @property
    def fingerprint(self) -> str | None:
        """The token's fingerprint, hashed once: every transition's event carries it."""
        known = self._fingerprint
        if known is None and self.token is not None:
            known = fingerprint(self.token)
            object.__setattr__(self, "_fingerprint", known)  # a cache on a frozen value
        return known

    def __repr__(self) -> str:
        if self.token is None:
            return f"AuthenticationOption(type={self.type!r})"
        return f"AuthenticationOption(type={self.type!r}, token=<{self.fingerprint}>)"

    __str__ = __repr__

    def to_dict(self) -> dict[str, Any]:
        """The tag's shape; the raw token is included, as the tag includes it."""
        if self.type == ANONYMOUS:
            return {"type": ANONYMOUS}
        return {"type": self.type, "token": self.token}

    def to_safe_dict(self) -> dict[str, Any]:
        """The tag's shape with the token replaced by its fingerprint, for display."""
        if self.type == ANONYMOUS:
            return {"type": ANONYMOUS}
        return {"type": self.type, "token": self.fingerprint}

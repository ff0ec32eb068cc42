"""The activator: whatever performs the platform's activation for the engine."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from statemachine.protocol.errors import ActivationError
from statemachine.protocol.options import ANONYMOUS, AuthenticationOption
from statemachine.protocol.reasons import FailureReason

if TYPE_CHECKING:
    from statemachine.tokens import TokenVerifier


@runtime_checkable
class Activator(Protocol):
    """Activates with an option; raises ``ActivationError`` to refuse.

    ``activate`` may be a plain or an ``async`` method; both sessions accept
    either. Any other exception counts as ``SERVER_ERROR``, and a call that
    outlives the policy's ``activation_timeout`` as ``ACTIVATION_TIMEOUT``.
    """

    def activate(self, option: AuthenticationOption) -> Awaitable[None] | None: ...


class LocalActivator:
    """The platform's check, done locally: the embedded default for demos and tests.

    A secured option passes only if its token verifies exactly as the platform
    would verify it; an anonymous option always passes.
    """

    __slots__ = ("verifier",)

    def __init__(self, verifier: TokenVerifier) -> None:
        if not callable(getattr(verifier, "verify", None)):
            raise TypeError("LocalActivator needs a TokenVerifier (an object with .verify(token))")
        self.verifier = verifier

    def activate(self, option: AuthenticationOption) -> None:
        # Imported here: statemachine.tokens loads jwcrypto, which plain engine users never need.
        from statemachine.tokens import TokenError

        if not option.is_secured:
            if option.type == ANONYMOUS:
                return
            raise ActivationError(FailureReason.INVALID_OPTION)
        if not isinstance(option.token, str) or not option.token:
            raise ActivationError(FailureReason.INVALID_OPTION)
        try:
            self.verifier.verify(option.token)
        except TokenError as error:
            raise ActivationError(error.reason, error.check) from None

    def __repr__(self) -> str:
        return f"LocalActivator({self.verifier!r})"

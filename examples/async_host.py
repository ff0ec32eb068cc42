"""A host driving AsyncActivationSession with a custom activator.

    python examples/async_host.py

Self-contained: it makes throwaway keys, serves the token endpoint of
``token_endpoint.py`` on loopback, and fetches each token over HTTP like a
real page would. The custom activator stands for a platform client: it adds
latency and refuses the first attempt, then delegates the real verification to
``LocalActivator``. Three visitors activate concurrently.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).parent))

from token_endpoint import serve_in_background

from policies import AnonymousFallbackPolicy, RetryPolicy
from statemachine import (
    ActivationError,
    ActivationResult,
    AsyncActivationSession,
    AuthenticationOption,
    FailureReason,
    LocalActivator,
)
from statemachine.tokens import TokenIssuer, TokenVerifier, generate_rsa


class PlatformClient:
    """A custom activator: async, with latency, and a platform that hiccups once."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.local = LocalActivator(verifier)
        self.hiccups = 1

    async def activate(self, option: AuthenticationOption) -> None:
        await asyncio.sleep(0.02)
        if option.is_secured and self.hiccups:
            self.hiccups -= 1
            raise ActivationError(FailureReason.SERVER_ERROR)
        self.local.activate(option)


def token_provider(url: str, user_id: str):  # type: ignore[no-untyped-def]
    async def provide() -> dict[str, object]:
        def fetch() -> dict[str, object]:
            request = urllib.request.Request(
                url, data=json.dumps({"userId": user_id}).encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.load(response)  # type: ignore[no-any-return]

        return await asyncio.to_thread(fetch)

    return provide


async def main() -> None:
    # Flat JSON events on stderr, as a host would ship them to its log pipeline.
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    brand, platform = generate_rsa(), generate_rsa()
    server, url = serve_in_background(TokenIssuer(brand, platform, "https://brand.example"))
    activator = PlatformClient(TokenVerifier(platform, brand, issuer="https://brand.example"))
    policy = AnonymousFallbackPolicy(
        retry=RetryPolicy(base_delay=0.05), on_activation_failure="block"
    )

    def report(result: ActivationResult) -> None:
        print(json.dumps(result.to_safe_dict()))

    sessions = [
        AsyncActivationSession(token_provider(url, f"visitor-{n}"), activator, policy)
        for n in range(3)
    ]
    results = await asyncio.gather(*(s.activate(report) for s in sessions))
    for session, result in zip(sessions, results, strict=True):
        steps = " -> ".join(
            [session.history[0].source.value, *(e.dest.value for e in session.history)]
        )
        print(f"{session.session_id}: {steps} (attempts {result.attempts})")
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    asyncio.run(main())

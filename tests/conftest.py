"""Keys are generated once per test session: no private key is ever committed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import settings

from statemachine.tokens import TokenIssuer, TokenVerifier, generate_rsa

# Property tests and fuzzes are reproducible by default: the examples are derived from each
# test's own code (derandomize), never from a random seed or a local example database, so CI
# runs exactly the examples every developer's `pytest` ran and cannot fail on one nobody saw.
# The fuzz stays wide (hundreds of varied examples per test); to explore beyond that fixed set,
# run with HYPOTHESIS_PROFILE=explore (random seeds, failures saved and replayed locally,
# a failing example printed as a reproduction blob), then pin what it finds with @example.
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))


@pytest.fixture(autouse=True)
def _quiet_json_logs() -> None:
    """Render every event as JSON (proving it serialises) but print nothing.

    Reset before every test: the CLI configures structlog for its own process,
    and an in-process CLI test must not leave that behind.
    """
    structlog.reset_defaults()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
    )


@pytest.fixture(scope="session")
def brand_key() -> Any:
    return generate_rsa()


@pytest.fixture(scope="session")
def platform_key() -> Any:
    return generate_rsa()


@pytest.fixture(scope="session")
def other_key() -> Any:
    return generate_rsa()


@pytest.fixture(scope="session")
def issuer(brand_key: Any, platform_key: Any) -> TokenIssuer:
    return TokenIssuer(brand_key, platform_key, "https://brand.example")


@pytest.fixture(scope="session")
def verifier(brand_key: Any, platform_key: Any) -> TokenVerifier:
    return TokenVerifier(platform_key, brand_key, issuer="https://brand.example")


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A redis-server of the test's own, to stop, kill or stall (``DEBUG`` allowed, from
    127.0.0.1 only); resumed first if the test left it stopped (SIGSTOP)."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path, extra=["--enable-debug-command", "local"]).start()
    yield server
    if server.process is not None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real 6-node Redis Cluster (3 masters, 3 replicas) for the whole test session."""
    from tests.redis_topologies import LocalCluster

    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()

"""Keys are generated once per test session: no private key is ever committed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from statemachine.tokens import TokenIssuer, TokenVerifier, generate_rsa


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real 6-node Redis Cluster (3 masters, 3 replicas) for the whole test session."""
    from tests.redis_topologies import LocalCluster

    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()

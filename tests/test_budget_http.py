"""Hostile visitors over real HTTP: floods of forged visitors and one visitor hammering.

Real sockets on loopback: the reference host as OS processes (``serve``, on one worker
with the memory store, or two workers on a real Redis), and an app served by uvicorn
in this process where the test must look into the memory store. Every flood is bounded
in count and in time.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request

from statemachine import ActivationTracker, AsyncActivationTracker, State
from statemachine.protocol.reasons import FailureReason
from statemachine.stores import MemoryStore
from statemachine.tokens import TokenIssuer
from statemachine.web import activation_routes
from tests.helpers import defensive
from tests.redis_server import free_port
from tests.web_host import Host

DEADLINE = 240.0
"""Seconds any flood may take on a busy machine before the test gives up (and fails)."""


class Client:
    """One keep-alive connection; each call says which visitor it is by its cookies."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies_set: dict[str, str] = {}  # what the server set, by name

    def call(
        self, method: str, path: str, cookies: dict[str, str], body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        text = response.read().decode()
        found = {k.lower(): v for k, v in response.getheaders()}
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies_set[key] = rest.split(";")[0]
        return response.status, found, (json.loads(text) if text.startswith(("{", "[")) else text)

    def close(self) -> None:
        self.connection.close()


def flood(port: int, count: int, one: Callable[[Client, int], None], loops: int = 4) -> int:
    """``count`` calls of ``one`` spread over ``loops`` connections; returns how many ran."""
    done = [0] * loops
    deadline = time.monotonic() + DEADLINE

    def loop(index: int) -> None:
        client = Client(port)
        try:
            for number in range(index, count, loops):
                if time.monotonic() > deadline:
                    return
                one(client, number)
                done[index] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(loops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE + 30)
    return sum(done)


def forged() -> str:
    return os.urandom(16).hex()


def flow() -> str:
    return os.urandom(12).hex()


# -- nobody signed in: no record at all -------------------------------------------------------
@pytest.fixture(scope="module")
def memory_host() -> Iterator[Host]:
    served = Host()
    yield served
    served.stop()


def test_a_flood_of_forged_visitors_nobody_signed_in_writes_nothing(memory_host: Host) -> None:
    answers: dict[tuple[int, str], int] = {}
    lock = threading.Lock()

    def one(client: Client, _number: int) -> None:
        status, _, body = client.call(
            "POST", "/activation/token", {"sa_visitor": forged()}, {"flow": flow()}
        )
        key = (status, str(body.get("reason")) if isinstance(body, dict) else str(body))
        with lock:
            answers[key] = answers.get(key, 0) + 1

    assert flood(memory_host.port, 20_000, one) == 20_000
    assert answers == {(200, FailureReason.TOKEN_UNAVAILABLE.message): 20_000}
    inspector = Client(memory_host.port)
    try:
        status, _, listed = inspector.call("GET", "/inspect/visitors", {})
        assert status == 200
        assert listed["visitors"] == []  # not one record written
        _, _, metrics = inspector.call("GET", "/metrics", {})
        assert "secured_activation_transitions_total{" not in metrics
        # A visitor who signs in still gets a token, activates and is authenticated.
        status, _, _ = inspector.call("POST", "/login", {}, {"user_id": "alice"})
        assert status == 204
        visitor = {"sa_visitor": forged(), "sa_user": inspector.cookies_set["sa_user"]}
        status, _, answer = inspector.call(
            "POST", "/activation/token", visitor, {"flow": "alice-flow"}
        )
        assert status == 200
        assert "authenticationOption" in answer
    finally:
        inspector.close()


# -- signed-in forged visitors fill a small memory store -----------------------------------------
class InProcess:
    """An ASGI app served by uvicorn on a real loopback socket, in a thread of this process."""

    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def test_a_full_memory_store_still_serves_a_new_visitor_and_keeps_flows_in_flight(
    issuer: TokenIssuer,
) -> None:
    store = MemoryStore(max_entries=1000)
    tracker = AsyncActivationTracker(defensive(activation_timeout=600.0), store)
    mint = partial(issuer.issue, "someone")

    def visitor_id(request: Request) -> str | None:
        return request.cookies.get("visitor")

    def token_provider(request: Request) -> Any:
        return mint if request.cookies.get("signed_in") == "yes" else None

    app = Starlette(
        routes=activation_routes(tracker, visitor_id=visitor_id, token_provider=token_provider)
    )
    served = InProcess(app)
    try:
        flying = {}
        client = Client(served.port)
        try:
            for index in range(50):  # visitors whose tag is activating: their flow stays in flight
                visitor, started = f"flying-{index}", flow()
                status, _, answer = client.call(
                    "POST",
                    "/activation/token",
                    {"visitor": visitor, "signed_in": "yes"},
                    {"flow": started},
                )
                assert status == 200
                assert "authenticationOption" in answer
                flying[visitor] = started
        finally:
            client.close()

        def one(connection: Client, _number: int) -> None:  # a forged visitor, settled
            cookies = {"visitor": forged(), "signed_in": "yes"}
            started = flow()
            status, _, _ = connection.call("POST", "/activation/token", cookies, {"flow": started})
            assert status == 200
            report = {
                "flow": started,
                "activation": {
                    "authentication": {
                        "option": {"type": "SECURED_AUTHENTICATION"},
                        "status": "authentication-success",
                    }
                },
            }
            status, _, body = connection.call("POST", "/activation/report", cookies, report)
            assert (status, body["state"]) == (200, "authenticated")

        assert flood(served.port, 3_000, one) == 3_000
        assert store.evicted >= 3_000 + 50 - 1000
        assert store.refused == 0
        client = Client(served.port)  # a new connection: the server closes idle ones
        try:
            status, _, answer = client.call(
                "POST",
                "/activation/token",
                {"visitor": "newcomer", "signed_in": "yes"},
                {"flow": "n"},
            )
        finally:
            client.close()
        assert status == 200
        assert "authenticationOption" in answer
        reader = ActivationTracker(tracker.policy, store)  # the same store, read in this thread
        for visitor in flying:  # not one visitor in flight was dropped
            view = reader.view(visitor)
            assert view is not None
            assert (view.state, view.flow_id) == (State.ACTIVATING, flying[visitor])
    finally:
        served.stop()


# -- one visitor hammering the token endpoint on two workers over Redis ------------------------
@pytest.fixture(scope="module")
def redis_host(redis_server: Any) -> Iterator[Host]:
    served = Host("--workers", "2", "--redis", redis_server.url)
    yield served
    served.stop()


def sign_in(port: int, user: str) -> dict[str, str]:
    client = Client(port)
    try:
        status, _, _ = client.call("POST", "/login", {}, {"user_id": user})
        assert status == 204
        return {"sa_visitor": forged(), "sa_user": client.cookies_set["sa_user"]}
    finally:
        client.close()


def activate(client: Client, cookies: dict[str, str]) -> tuple[int, Any]:
    """One page load: a token, the local platform's activation, the report."""
    started = flow()
    status, _, answer = client.call("POST", "/activation/token", cookies, {"flow": started})
    if status != 200 or "authenticationOption" not in answer:
        return status, answer
    _, _, activation = client.call(
        "POST",
        "/platform/activate",
        cookies,
        {"authenticationOption": answer["authenticationOption"]},
    )
    status, _, report = client.call(
        "POST", "/activation/report", cookies, {"flow": started, "activation": activation}
    )
    return status, report


def test_one_visitor_hammering_gets_at_most_the_budget_then_429s(redis_host: Host) -> None:
    hammer = sign_in(redis_host.port, "mallory")
    first = Client(redis_host.port)
    try:
        first_flow = activate(first, hammer)
    finally:
        first.close()
    assert first_flow == (200, {"state": "authenticated", "next": None, "accepted": True})
    tokens: list[str] = []
    statuses: dict[int, int] = {}
    over: list[tuple[dict[str, str], Any]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 10.0

    def hammering() -> None:
        client = Client(redis_host.port)
        try:
            for _ in range(100_000):  # bounded in count and in time
                if time.monotonic() > stop_at:
                    return
                status, headers, answer = client.call(
                    "POST", "/activation/token", hammer, {"flow": flow()}
                )
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200 and "authenticationOption" in answer:
                        tokens.append(answer["authenticationOption"]["token"])
                    if status == 429 and len(over) < 5:
                        over.append((headers, answer))
        finally:
            client.close()

    others: list[tuple[int, Any]] = []

    def other_visitors() -> None:  # meanwhile, other visitors sign in and activate as usual
        client = Client(redis_host.port)
        try:
            for index in range(100):
                if time.monotonic() > stop_at and index >= 3:  # at least 3, however slow
                    return
                others.append(activate(client, sign_in(redis_host.port, f"other-{index}")))
                time.sleep(0.5)
        finally:
            client.close()

    threads = [threading.Thread(target=hammering) for _ in range(4)]
    threads.append(threading.Thread(target=other_visitors))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert not any(thread.is_alive() for thread in threads)
    assert len(tokens) + 1 <= 12  # the first activation's token and the refreshes: the budget
    assert len(set(tokens)) == len(tokens)
    assert statuses.get(429, 0) > 0
    assert set(statuses) <= {200, 409, 429}
    headers, answer = over[0]
    assert 1 <= int(headers["retry-after"]) <= 60
    assert answer["reason"] == FailureReason.MINT_BUDGET_SPENT.message
    assert answer["activate"] is False
    assert len(others) >= 3
    assert all(
        result == (200, {"state": "authenticated", "next": None, "accepted": True})
        for result in others
    )

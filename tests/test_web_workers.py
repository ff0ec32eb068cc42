"""``serve --workers 2 --redis``: two OS processes, one real Redis, driven over HTTP with a new
connection per request — as a browser's requests land on any worker."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web_host import Host


class Visitor:
    """One browser: its cookies, and the tag's calls made by hand (a new connection each)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.cookies: dict[str, str] = {}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.host.port, timeout=30)
        try:
            headers = {"Connection": "close"}
            if self.cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    key, _, rest = value.partition("=")
                    self.cookies[key] = rest.split(";")[0]
            raw = response.read()
            text = raw.decode()
            return response.status, (json.loads(text) if text.startswith(("{", "[")) else text)
        finally:
            connection.close()

    def sign_in(self, user: str) -> None:
        assert self.call("POST", "/login", {"user_id": user})[0] == 204

    def activate(self, flow: str) -> tuple[int, Any]:
        """What the snippet and the tag do for one page load; returns the last answer."""
        status, answer = self.call("POST", "/activation/token", {"flow": flow})
        if status != 200 or "authenticationOption" not in answer:
            return status, answer
        option = answer["authenticationOption"]
        _, activation = self.call("POST", "/platform/activate", {"authenticationOption": option})
        return self.call("POST", "/activation/report", {"flow": flow, "activation": activation})

    def state(self) -> Any:
        return self.call("GET", "/activation/state")[1]


@pytest.fixture(scope="module")
def host(redis_server: Any) -> Iterator[Host]:
    # Each worker's event loop mints and verifies tokens (CPU work) between its Redis calls; on
    # a loaded machine a reply can wait longer than the store's default 0.5 s for the loop, and
    # then the policy answers. These tests check consistency across workers, not latency.
    served = Host("--workers", "2", "--redis", redis_server.url, "--redis-timeout", "10")
    yield served
    served.stop()


def assert_two_tabs_make_one_login(visitors: list[Visitor]) -> None:
    """Two tabs of every signed-in visitor ask at once: one 200 and one 409 each, one login."""
    work = []
    for index, visitor in enumerate(visitors):
        for tab in ("a", "b"):
            flow = f"tab-{index}-{tab}"
            work.append(lambda v=visitor, f=flow: v.call("POST", "/activation/token", {"flow": f}))
    answers = run_all(work)
    for index in range(len(visitors)):
        pair = sorted(status for status, _ in answers[2 * index : 2 * index + 2])
        assert pair == [200, 409], (index, answers[2 * index : 2 * index + 2])
    for visitor in visitors:
        history = visitor.state()["history"]
        assert [entry["trigger"] for entry in history].count("activate") == 1


def run_all(work: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(work)

    def one(index: int) -> None:
        results[index] = work[index]()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_two_workers_really_serve(host: Host) -> None:
    assert len(host.workers()) == 2


def test_twenty_concurrent_visitors_consistent_on_every_worker(host: Host) -> None:
    visitors = [Visitor(host) for _ in range(20)]
    for index, visitor in enumerate(visitors):
        visitor.call("GET", "/")
        visitor.sign_in(f"user-{index}")
    results = run_all([(lambda v=v, i=i: v.activate(f"flow-{i}")) for i, v in enumerate(visitors)])
    assert all(status == 200 and answer["state"] == "authenticated" for status, answer in results)
    for visitor in visitors:  # every read, on whichever worker, agrees
        states = {visitor.state()["state"] for _ in range(6)}
        assert states == {"authenticated"}


def test_two_tabs_per_visitor_make_exactly_one_login(host: Host) -> None:
    visitors = [Visitor(host) for _ in range(8)]
    for index, visitor in enumerate(visitors):
        visitor.call("GET", "/")
        visitor.sign_in(f"tabs-{index}")
    assert_two_tabs_make_one_login(visitors)


def test_a_worker_killed_loses_no_visitor(host: Host) -> None:
    visitors = [Visitor(host) for _ in range(10)]
    for index, visitor in enumerate(visitors):
        visitor.call("GET", "/")
        visitor.sign_in(f"survivor-{index}")
        assert visitor.activate(f"survive-{index}")[1]["state"] == "authenticated"
    before = host.workers()
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the supervisor starts a replacement
        now = host.workers()
        if len(now) == 2 and before[0] not in now:
            break
        time.sleep(0.2)
    for visitor in visitors:
        for _ in range(4):
            assert visitor.state()["state"] == "authenticated"


def test_no_raw_token_in_state_inspector_or_metrics(host: Host) -> None:
    visitor = Visitor(host)
    visitor.call("GET", "/")
    visitor.sign_in("secret-user")
    status, answer = visitor.call("POST", "/activation/token", {"flow": "secret-flow"})
    assert status == 200
    token = answer["authenticationOption"]["token"]
    pages = [
        visitor.call("GET", "/activation/state")[1],
        visitor.call("GET", "/inspect")[1],
        visitor.call("GET", "/inspect/visitors")[1],
        visitor.call("GET", "/metrics")[1],
    ]
    listing = pages[2]
    pages += [
        visitor.call("GET", f"/inspect/visitor/{v['handle']}")[1] for v in listing["visitors"]
    ]
    text = json.dumps(pages)
    assert token not in text
    assert token.split(".")[0] not in text
    assert "secret-user" not in text


def raw_call(host: Host, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", host.port, timeout=30)
    try:
        connection.request(
            method, path, body=body or None, headers={"Connection": "close", **headers}
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_over_http_the_rules_hold_on_every_worker(host: Host) -> None:
    """Through uvicorn on two workers: a proxied client gets no inspector or metrics, and a
    state change from another origin or not declared JSON changes nothing."""
    visitor = Visitor(host)
    visitor.sign_in("visitor-rules")
    assert visitor.activate("rules-1")[1]["state"] == "authenticated"
    cookie = "; ".join(f"{k}={v}" for k, v in visitor.cookies.items())
    for _ in range(4):  # new connections: both workers answer
        for path in ("/inspect", "/inspect/visitors", "/metrics"):
            assert raw_call(host, "GET", path, {}) == 200
            assert raw_call(host, "GET", path, {"X-Forwarded-For": "203.0.113.9"}) == 403
            assert raw_call(host, "GET", path, {"Forwarded": "for=203.0.113.9"}) == 403
        sibling = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{host.port + 1}"}
        json_type = {"Content-Type": "application/json"}
        assert raw_call(host, "POST", "/activation/logout", {**sibling, **json_type}, b"{}") == 403
        form = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        assert raw_call(host, "POST", "/activation/logout", form, b"a=1") == 415
        assert raw_call(host, "POST", "/signout", {**sibling, **json_type}, b"{}") == 403
    assert visitor.state()["state"] == "authenticated"

"""The README's FastAPI, Flask and Django hosts on 2 worker processes over a real Redis
(``secured-activation run`` for FastAPI, gunicorn for Flask and Django), driven over HTTP
with a new connection per request — as a browser's requests land on any worker."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.framework_hosts import (
    FRAMEWORKS,
    ROOT,
    glue_lines,
    start_on_own_redis,
    write_keys,
)
from tests.process_host import ProcessHost
from tests.redis_server import RedisServer
from tests.test_web_workers import Visitor, assert_two_tabs_make_one_login, run_all

SUCCESS = {
    "authentication": {
        "option": {"type": "SECURED_AUTHENTICATION"},
        "status": "authentication-success",
    }
}


@dataclass
class Served:
    framework: str
    host: ProcessHost
    redis: RedisServer
    port: int  # what Visitor reads

    def visitor(self, user: str | None = None) -> Visitor:
        visitor = Visitor(self)  # type: ignore[arg-type]
        assert visitor.call("GET", "/")[0] == 200  # the page: the visitor cookie is set
        if user is not None:
            visitor.sign_in(user)
        return visitor


@pytest.fixture(scope="module", params=FRAMEWORKS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    framework = str(request.param)
    host, redis = start_on_own_redis(
        framework,
        tmp_path_factory.mktemp(f"redis-{framework}"),
        tmp_path_factory.mktemp(f"host-{framework}"),
    )
    served = Served(framework, host, redis, host.port)
    yield served
    host.stop()
    served.redis.stop()  # the store-down test replaces it


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_readme_glue_is_at_most_16_lines(framework: str) -> None:
    lines = glue_lines(framework)
    # 16: FastAPI's inspector takes the workers' shared secret on a line of its own
    assert 8 <= len(lines) <= 16, "\n".join(lines)


def test_two_workers_really_serve(served: Served) -> None:
    assert len(served.host.wait_for_workers(2)) == 2


def test_twenty_concurrent_visitors_consistent_on_every_worker(served: Served) -> None:
    visitors = [served.visitor(f"user-{index}") for index in range(20)]
    results = run_all([(lambda v=v, i=i: v.activate(f"flow-{i}")) for i, v in enumerate(visitors)])
    assert all(
        status == 200 and answer["state"] == "authenticated" for status, answer in results
    ), results
    for visitor in visitors:  # every read, on whichever worker, agrees
        assert {visitor.state()["state"] for _ in range(6)} == {"authenticated"}


def test_two_tabs_per_visitor_make_exactly_one_login(served: Served) -> None:
    visitors = [served.visitor(f"tabs-{index}") for index in range(8)]
    assert_two_tabs_make_one_login(visitors)


def authenticated_outcomes(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("secured_activation_outcomes_total{")
            and 'state="authenticated"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrapes(served: Served, count: int = 10) -> list[float]:
    """``count`` successive scrapes of /metrics, each on a new connection (any worker)."""
    found = []
    for _ in range(count):
        status, text = Visitor(served).call("GET", "/metrics")  # type: ignore[arg-type]
        assert status == 200
        found.append(authenticated_outcomes(text))
    return found


def test_metrics_count_every_worker_on_every_scrape(served: Served) -> None:
    before = scrapes(served)
    assert len(set(before)) == 1, before
    flows = 6
    for index in range(flows):
        visitor = served.visitor(f"counted-{index}")
        assert visitor.activate(f"counted-{index}")[1]["state"] == "authenticated"
    assert scrapes(served) == [before[0] + flows] * 10


def test_the_inspector_opens_on_any_worker_what_another_listed(served: Served) -> None:
    """The page lists visitors on one worker and opens one on whichever answers next: the
    README's hosts give every worker the same secret, so names and handles hold across them."""
    visitor = served.visitor("inspected")
    assert visitor.activate("inspected")[1]["state"] == "authenticated"
    listings = []
    for _ in range(12):  # a new connection each: both workers answer some
        status, _, text = raw(served, "GET", "/inspect/visitors", {})
        assert status == 200, text[:200]
        listings.append([entry["ref"] for entry in json.loads(text)["visitors"]])
    assert all(listing == listings[0] for listing in listings), listings
    status, _, text = raw(served, "GET", "/inspect/visitors", {})
    handle = json.loads(text)["visitors"][0]["handle"]  # newest first: the one just inspected
    for _ in range(12):
        status, _, text = raw(served, "GET", f"/inspect/visitor/{handle}", {})
        assert status == 200, text[:200]
        assert json.loads(text)["state"] == "authenticated"


def test_a_worker_killed_loses_no_visitor(served: Served) -> None:
    visitors = [served.visitor(f"survivor-{index}") for index in range(10)]
    for index, visitor in enumerate(visitors):
        assert visitor.activate(f"survive-{index}")[1]["state"] == "authenticated"
    before = served.host.wait_for_workers(2)
    os.kill(before[0], signal.SIGKILL)
    served.host.wait_for_workers(2, without=before[0])  # the master starts a replacement
    for visitor in visitors:
        for _ in range(4):
            assert visitor.state()["state"] == "authenticated"


def raw(
    served: Served, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        connection.putrequest(method, path)
        for name, value in {
            "Connection": "close",
            "Content-Length": str(len(body)),
            **headers,
        }.items():
            connection.putheader(name, value.encode("latin-1"))
        connection.endheaders(body)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        return response.status, response.getheader("Content-Type", ""), text
    finally:
        connection.close()


def test_bad_input_gets_a_4xx_json_error(served: Served) -> None:
    visitor = served.visitor("careful")
    cookie = "; ".join(f"{k}={v}" for k, v in visitor.cookies.items())
    signed = {"Cookie": cookie}
    json_type = {**signed, "Content-Type": "application/json"}
    cases: list[tuple[str, str, dict[str, str], bytes, int | None]] = [
        (
            "POST",
            "/activation/token",
            {**signed, "Content-Type": "text/plain"},
            b'{"flow": "a"}',
            415,
        ),
        (
            "POST",
            "/activation/token",
            {**signed, "Content-Type": "application/x-www-form-urlencoded"},
            b"flow=a",
            415,
        ),
        ("POST", "/activation/token", json_type, b"{not json", 400),
        ("POST", "/activation/token", json_type, b'{"flow": 5}', 400),
        ("POST", "/activation/token", json_type, b"[1, 2]", 400),
        ("POST", "/activation/token", json_type, b'{"flow": "' + b"x" * 70_000 + b'"}', 413),
        (
            "POST",
            "/activation/token",
            {**json_type, "Origin": "http://evil.example"},
            b'{"flow": "a"}',
            403,
        ),
        ("POST", "/activation/logout", {**json_type, "Sec-Fetch-Site": "cross-site"}, b"{}", 403),
        # no cookie: the host's middleware makes a new visitor, whom nobody signed in
        ("POST", "/activation/token", {"Content-Type": "application/json"}, b'{"flow": "a"}', None),
        ("GET", "/activation/token", signed, b"", 405),
        ("POST", "/activation/state", json_type, b"{}", 405),
        ("POST", "/activation/report", json_type, b'{"flow": "a", "activation": "junk"}', None),
        ("POST", "/activation/report", json_type, b'{"flow": "\xff\xfe"}', 400),
        (
            "POST",
            "/activation/token",
            {**json_type, "Cookie": "sa=\xe9\xe8; " + cookie},
            b'{"flow": "a"}',
            None,
        ),
        (
            "POST",
            "/activation/token",
            {"Content-Type": "application/json", "Cookie": "\xe9=\xe8\xff"},
            b"{}",
            None,
        ),
        ("GET", "/inspect/visitor/not-a-handle", {}, b"", 404),
        ("GET", "/inspect/visitors", {"X-Forwarded-For": "203.0.113.9"}, b"", 403),
        ("GET", "/metrics", {"Forwarded": "for=203.0.113.9"}, b"", 403),
    ]
    for method, path, headers, body, expected in cases:
        status, kind, text = raw(served, method, path, headers, body)
        where = (served.framework, method, path, headers.get("Content-Type"), status, text[:200])
        assert 400 <= status < 500 or (expected is None and status == 200), where
        if expected is not None:
            assert status == expected, where
        assert kind.startswith("application/json"), where
        answer = json.loads(text)
        assert answer.keys() & {"error", "state", "activate", "authenticationOption"}, where
        assert "Traceback" not in text


def test_the_store_down_gets_the_policys_answer_and_503s(served: Served) -> None:
    """Last in the module: Redis is stopped, then started again on the same port (empty)."""
    visitor = served.visitor("unlucky")
    served.redis.stop()
    try:
        status, answer = visitor.call("POST", "/activation/token", {"flow": "down"})
        assert status == 200, answer
        assert answer["activate"] is False  # the defensive policy: do not activate
        assert "authenticationOption" not in answer
        for method, path, body in (
            ("GET", "/activation/state", None),
            ("POST", "/activation/report", {"flow": "down", "activation": SUCCESS}),
            ("POST", "/activation/logout", {}),
            ("GET", "/inspect/visitors", None),
        ):
            status, answer = visitor.call(method, path, body)
            assert status == 503, (path, status, answer)
            assert "error" in answer
    finally:
        served.redis = RedisServer(served.redis.directory, served.redis.port).start()
    assert "Traceback" not in served.host.output()


def test_the_readme_testing_kit_sample_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Testing kit: ") : readme.index("## Reference")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    write_keys(tmp_path / "keys")
    check = "\nprint(sorted(r.path for r in routes), sorted(str(p.pattern) for p in patterns))\n"
    done = subprocess.run(
        [sys.executable, "-c", code + check],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "['/platform/activate', '/tag.js'] ['platform/activate', 'tag.js']" in done.stdout


def test_the_readme_installs_from_the_clone_with_real_extras() -> None:
    import tomllib

    readme = (ROOT / "README.md").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "pip install 'secured-activation[" not in readme  # not on a package index
    named = set(re.findall(r"pip install -e '[^']*\[(\w+)\]'", readme))
    named |= set(re.findall(r"# or \[(\w+)\], \[(\w+)\]", readme)[0])
    assert {"fastapi", "flask", "django"} <= named
    assert named <= set(extras), named - set(extras)
    for framework, package in (("fastapi", "fastapi"), ("flask", "flask"), ("django", "django")):
        assert any(dep.startswith(package) for dep in extras[framework])
    assert any(dep.startswith("gunicorn") for dep in extras["flask"] + extras["django"])

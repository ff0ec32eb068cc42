"""9. Web frameworks: the token endpoint on FastAPI, Flask and Django against a bare endpoint.

On each framework, one app (bench/frameworkapps.py) on 2 worker processes — FastAPI under
``secured-activation run``, Flask and Django under gunicorn (2 workers, 4 threads each, as
the README runs them) — serves the token endpoint through the framework's adapter, the
tracker and Redis, and a bare endpoint that reads the request the same way, mints and
answers. wrk loads both, one after the other, in the same run, from loopback, bounded in
time; every request is a new visitor's first token request (bench/post.lua), so both
endpoints mint once per request.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ms, start_server
from bench.web import LUA, _host_env, _wrk
from tests.process_host import stop_process
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FRAMEWORKS = ("fastapi", "flask", "django")


def _command(framework: str, port: int) -> list[str]:
    if framework == "fastapi":
        return [
            *(str(BIN / "secured-activation"), "run", "bench.frameworkapps:fastapi_app"),
            *("--factory", "--workers", "2", "--port", str(port), "--app-dir", str(ROOT)),
        ]
    return [
        *(str(BIN / "gunicorn"), "--workers", "2", "--threads", "4"),
        *("--bind", f"127.0.0.1:{port}", "--log-level", "warning"),
        f"bench.frameworkapps:{framework}_app()",
    ]


def _start(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return start_server(
        command,
        env=env,
        cwd=ROOT,
        ready_url=f"http://127.0.0.1:{port}/activation/snippet.js",
        what=command[0],
        stop=_stop,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, signal.SIGTERM, grace=20, group=False, killed_wait=20)


def _nonce() -> tuple[str]:
    """post.lua's argument: fresh per wrk run, so no run repeats an earlier run's visitors."""
    return (secrets.token_hex(7),)


def run(quick: bool) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"missing": "wrk is not installed (apt-get install wrk; .ci/run does it)"}
    seconds, connections = (1, 8) if quick else (6, 16)
    results: dict[str, Any] = {"seconds": seconds, "connections": connections}
    with tempfile.TemporaryDirectory() as directory:
        server, env = _host_env(Path(directory))
        try:
            for framework in FRAMEWORKS:
                port = free_port()
                process = _start(_command(framework, port), env, port)
                try:
                    base = f"http://127.0.0.1:{port}"
                    _wrk(f"{base}/bare", 1, connections, LUA, args=_nonce())  # warm both paths up
                    _wrk(f"{base}/activation/token", 1, connections, LUA, args=_nonce())
                    results[framework] = {
                        "bare": _wrk(f"{base}/bare", seconds, connections, LUA, args=_nonce()),
                        "tracked": _wrk(
                            f"{base}/activation/token", seconds, connections, LUA, args=_nonce()
                        ),
                    }
                finally:
                    _stop(process)
        finally:
            server.stop()
    return results


def report(r: dict[str, Any]) -> list[str]:
    title = "## 9. Web frameworks: the token endpoint on FastAPI, Flask and Django"
    if "missing" in r:
        return [title, "", f"Not run: {r['missing']}.", ""]
    lines = [
        title,
        "",
        f"`wrk -t2 -c{r['connections']} -d{r['seconds']}s` on loopback against each framework's "
        "app on 2 worker processes (FastAPI: `secured-activation run --workers 2`; Flask and "
        "Django: `gunicorn --workers 2 --threads 4`), a real Redis; every request a new "
        "visitor's first token request. Bare: the same request reading and strict JSON "
        "parsing, a mint and a JSON answer, without the tracker. Target: tracked ≥ 0.75x bare.",
        "",
        "| framework | endpoint | requests/s | p50 | p99 | non-2xx | tracked / bare |",
        "|---|---|---|---|---|---|---|",
    ]
    for framework in FRAMEWORKS:
        bare, tracked = r[framework]["bare"], r[framework]["tracked"]
        ratio = tracked["rate"] / bare["rate"]
        verdict = "met" if ratio >= 0.75 else "MISSED"
        for name, m, cell in (
            ("bare: parse, mint, answer", bare, ""),
            ("tracked: `POST /activation/token`", tracked, f"**{ratio:.2f}x** ({verdict})"),
        ):
            lines.append(
                f"| {framework} | {name} | {m['rate']:,.0f} | {ms(m['p50'])} | {ms(m['p99'])} "
                f"| {int(m['errors'])} | {cell} |"
            )
    lines.append("")
    return lines

"""7. Web: the token endpoint on 2 workers and Redis, under wrk, against a bare endpoint.

Both endpoints live in the same app on the same workers (bench/webapp.py) and are loaded
by the same wrk command in the same run, from loopback, bounded in time. Every request is
a new visitor's first token request (bench/post.lua), so both mint once per request.

First, the transport: a no-op endpoint on uvicorn's own ``--workers 2`` against the same
endpoint on ``run_workers`` (which binds its socket as TCP, so asyncio sets TCP_NODELAY).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ms, start_server, us
from statemachine.web.reference import write_keys
from tests.process_host import stop_process
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).resolve().parent / "post.lua"


def _start(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return start_server(
        command,
        env=env,
        cwd=ROOT,
        ready_url=f"http://127.0.0.1:{port}/noop",
        what=str(command[2:4]),
        stop=_stop,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, signal.SIGINT, grace=20, group=True, killed_wait=20)


def _host_env(directory: Path) -> tuple[RedisServer, dict[str, str]]:
    """Throwaway keys and a started redis-server in ``directory``; the hosts' environment."""
    keys = directory / "keys"
    keys.mkdir()
    write_keys(keys)
    server = RedisServer(directory).start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_KEYS": str(keys),
        "BENCH_REDIS": server.url,
    }
    return server, env


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _family(pid: int) -> list[int]:
    """A process and its descendants (the supervisor and its workers)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        queue.extend(int(child) for child in children)
    return found


def _wrk(
    url: str,
    seconds: int,
    connections: int,
    script: Path | None = None,
    watch: dict[str, int] | None = None,
) -> dict[str, float]:
    """wrk's rate and latency; with ``watch`` (role -> pid), each role's CPU per request."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    families = {role: _family(pid) for role, pid in (watch or {}).items()}
    before = {role: sum(map(_cpu_seconds, pids)) for role, pids in families.items()}
    done = subprocess.run(  # bounded by -d
        [*command, url], capture_output=True, text=True, timeout=seconds + 60, check=True
    )
    used = {role: sum(map(_cpu_seconds, pids)) - before[role] for role, pids in families.items()}
    text = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    total = re.search(r"(\d+) requests in", text)
    count = float(total.group(1)) if total else rate * seconds

    def percentile(label: str) -> float:
        found = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", text)
        assert found is not None, text
        value, unit = float(found.group(1)), found.group(2)
        return value / {"us": 1e6, "ms": 1e3, "s": 1.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rate": rate,
        "p50": percentile("50"),
        "p99": percentile("99"),
        "errors": float(errors.group(1)) if errors else 0.0,
        **{f"cpu_{role}": seconds_used / max(count, 1.0) for role, seconds_used in used.items()},
    }


def run(quick: bool) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"missing": "wrk is not installed (apt-get install wrk; .ci/run does it)"}
    seconds, connections = (1, 8) if quick else (8, 16)
    with tempfile.TemporaryDirectory() as directory:
        server, env = _host_env(Path(directory))
        results: dict[str, Any] = {}
        try:
            port = free_port()
            trap = _start(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "bench.webapp:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "2",
                    "--log-level",
                    "warning",
                ],
                env,
                port,
            )
            try:
                results["noop_uvicorn"] = _wrk(
                    f"http://127.0.0.1:{port}/noop", seconds, connections
                )
            finally:
                _stop(trap)
            for logging, key in ((True, "tracked"), (False, "tracked_default_logs")):
                port = free_port()
                ours = _start(
                    [
                        sys.executable,
                        "-c",
                        # As `secured-activation serve` runs its workers: the command line's log
                        # configuration (WARNING) reaches them. Then, for the logging row, the
                        # workers on structlog's defaults (every transition rendered to stdout).
                        (
                            "from statemachine.signals import logs; "
                            "logs.configure_for_cli(verbose=False, json=False); "
                            if logging
                            else ""
                        )
                        + "from statemachine.web.reference import run_workers; "
                        f"run_workers('bench.webapp:create_app', host='127.0.0.1', port={port}, "
                        "workers=2)",
                    ],
                    env,
                    port,
                )
                try:
                    base = f"http://127.0.0.1:{port}"
                    if logging:
                        results["noop_ours"] = _wrk(f"{base}/noop", seconds, connections)
                        _wrk(f"{base}/bare", 1, connections, LUA)  # warm both paths up
                    _wrk(f"{base}/activation/token", 1, connections, LUA)
                    assert server.process is not None
                    watch = {"workers": ours.pid, "redis": server.process.pid}
                    if logging:
                        results["bare"] = _wrk(f"{base}/bare", seconds, connections, LUA, watch)
                    results[key] = _wrk(
                        f"{base}/activation/token", seconds, connections, LUA, watch
                    )
                finally:
                    _stop(ours)
        finally:
            server.stop()
        results["seconds"], results["connections"] = seconds, connections
        return results


def _cpu_lines(r: dict[str, Any]) -> list[str]:
    bare, tracked = r["bare"], r["tracked"]
    if "cpu_workers" not in tracked:
        return []
    return [
        "CPU per request during each run (`/proc`, the two workers and their supervisor; "
        f"redis-server): bare {us(bare['cpu_workers'])} in the workers; tracked "
        f"{us(tracked['cpu_workers'])} in the workers and {us(tracked['cpu_redis'])} in "
        f"redis-server: the tracker adds {us(tracked['cpu_workers'] - bare['cpu_workers'])} "
        "of worker CPU per request on cores that wrk and redis-server share.",
        "",
    ]


def report(r: dict[str, Any]) -> list[str]:
    if "missing" in r:
        return ["## 7. Web", "", f"Not run: {r['missing']}.", ""]

    def row(name: str, m: dict[str, float]) -> str:
        return (
            f"| {name} | {m['rate']:,.0f} | {ms(m['p50'])} | {ms(m['p99'])} | {int(m['errors'])} |"
        )

    ratio = r["tracked"]["rate"] / r["bare"]["rate"]
    return [
        "## 7. Web: the token endpoint on 2 workers and Redis",
        "",
        f"`wrk -t2 -c{r['connections']} -d{r['seconds']}s` on loopback; every request a new "
        "visitor's first token request (so both endpoints mint once per request). Target: the "
        "tracked endpoint ≥ 0.75x the bare endpoint's requests per second.",
        "",
        "| endpoint | requests/s | p50 | p99 | non-2xx |",
        "|---|---|---|---|---|",
        row("no-op, uvicorn's own `--workers 2`", r["noop_uvicorn"]),
        row("no-op, `run_workers` (2 workers, socket bound as TCP)", r["noop_ours"]),
        row("bare: parse, mint, answer", r["bare"]),
        row("tracked: `POST /activation/token` on Redis", r["tracked"]),
        *(
            [
                row(
                    "tracked, workers on structlog's defaults (every transition to stdout)",
                    r["tracked_default_logs"],
                )
            ]
            if "tracked_default_logs" in r
            else []
        ),
        "",
        f"Tracked / bare: **{ratio:.2f}x** ({'met' if ratio >= 0.75 else 'MISSED'}).",
        "",
        *_cpu_lines(r),
        "The workers log as `secured-activation serve`'s do: the command line's configuration "
        "(WARNING, to stderr) reaches every worker. The last row is the same endpoint with "
        "workers left on structlog's defaults, as every worker was before: two rendered info "
        "lines per token request.",
        "",
        "The first two rows are the transport trap: uvicorn's multi-worker mode binds its socket "
        "without naming TCP (`socket.socket(AF_INET)`, protocol 0), and asyncio sets TCP_NODELAY "
        "only on sockets whose protocol is `IPPROTO_TCP`; a response written in two parts then "
        "waits for the client's delayed ACK (~40 ms). `run_workers` (used by "
        "`secured-activation serve`) binds the socket itself as TCP.",
        "",
    ]

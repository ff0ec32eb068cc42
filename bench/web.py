"""7. Web: ``secured-activation serve``'s token endpoint on 2 workers and Redis, under wrk,
against a bare minting endpoint in the same workers.

The app is serve's own (``statemachine.web.reference``, on Redis, bench/webapp.py adds the
bare endpoint and a no-op to it). Every request is a new visitor's first token request by a
signed-in user (bench/serve.lua: its own visitor cookie, one signed user cookie), so both
endpoints mint once per request.

The machine is a shared 2-core VM: a rate measured alone moves by 3x from one minute to the
next. So the two endpoints are loaded in alternating wrk runs (bare, tracked, tracked, bare,
...: each pair's order flips, so a drift in the machine's load favours neither), a few
seconds each, and the row is the median of the pairs' ratios, each pair taken from the same
moments. Each run also records the CPU per request of the workers and of redis-server, and
how busy the two cores were with wrk and with everything else (``/proc``), which says why a
ratio moved.

First, the transport: a no-op endpoint on uvicorn's own ``--workers 2`` against the same
endpoint on ``run_workers`` (which binds its socket as TCP, so asyncio sets TCP_NODELAY).
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ms, start_server, us
from statemachine.web import reference
from statemachine.web.reference import write_keys
from tests.process_host import stop_process
from tests.redis_server import RedisServer, free_port
from tests.web_apps import http_scope

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "post.lua"
SERVE_LUA = Path(__file__).resolve().parent / "serve.lua"
TOKEN = "/activation/token"
GOAL = 0.75


def _uvicorn_version() -> str:
    """The uvicorn release the no-op rows ran on (the transport trap depends on it)."""
    from importlib.metadata import version

    return version("uvicorn")


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
    """Throwaway keys and a started redis-server in ``directory``; the hosts' environment
    (``BENCH_*`` for bench/frameworkapps.py, and what ``serve`` hands its workers)."""
    keys = directory / "keys"
    keys.mkdir()
    write_keys(keys)
    server = RedisServer(directory).start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_KEYS": str(keys),
        "BENCH_REDIS": server.url,
        reference.ENV_KEYS: str(keys),
        reference.ENV_REDIS: server.url,
        reference.ENV_POLICY: "defensive",
        reference.ENV_SECRET: secrets.token_hex(32),
    }
    env.pop(reference.ENV_REDIS_TIMEOUT, None)
    return server, env


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds every core of the machine spent busy so far (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


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


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _wrk(
    url: str,
    seconds: int,
    connections: int,
    script: Path | None = None,
    watch: dict[str, int] | None = None,
    args: tuple[str, ...] = (),
) -> dict[str, float]:
    """wrk's rate and latency; with ``watch`` (role -> pid), each role's CPU per request, and
    how many cores each role, wrk and everything else on the machine kept busy meanwhile."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if args:
        command += ["--", *args]
    families = {role: _family(pid) for role, pid in (watch or {}).items()}
    before = {role: sum(map(_cpu_seconds, pids)) for role, pids in families.items()}
    busy, children, started = _machine_busy(), _children_cpu(), time.monotonic()
    done = subprocess.run(  # bounded by -d
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    )
    wall = time.monotonic() - started
    wrk_cpu, busy = _children_cpu() - children, _machine_busy() - busy
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
    measured: dict[str, float] = {
        "rate": rate,
        "p50": percentile("50"),
        "p99": percentile("99"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }
    if watch:
        measured |= {f"cpu_{role}": spent / max(count, 1.0) for role, spent in used.items()}
        measured |= {f"cores_{role}": spent / wall for role, spent in used.items()}
        measured["cores_wrk"] = wrk_cpu / wall
        measured["cores_others"] = max(0.0, busy - wrk_cpu - sum(used.values())) / wall
    return measured


def _spread(m: dict[str, float]) -> str:
    """A no-op row's runs: median, and their range (how the connections fell, see ``_noop``)."""
    if "low" not in m:
        return ""
    if m["low"] == m["high"]:
        return " (one run)"
    return f" (median of 3 runs; {m['low']:,.0f} to {m['high']:,.0f} req/s)"


def _run(user: str) -> tuple[str, str]:
    """serve.lua's arguments for one wrk run: the signed user cookie and a fresh nonce, so
    that no run repeats an earlier run's visitors (wrk never seeds ``math.random``)."""
    return user, secrets.token_hex(7)


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each field's median over the runs."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _alternate(
    base: str, seconds: int, connections: int, pairs: int, watch: dict[str, int], user: str
) -> dict[str, Any]:
    """``pairs`` pairs of bare and tracked runs, the order flipping each pair (ABBA...)."""
    bare: list[dict[str, float]] = []
    tracked: list[dict[str, float]] = []
    for number in range(pairs):
        order = ((bare, "/bare"), (tracked, TOKEN))
        for runs, path in order if number % 2 == 0 else order[::-1]:
            runs.append(_wrk(f"{base}{path}", seconds, connections, SERVE_LUA, watch, _run(user)))
    ratios = [t["rate"] / b["rate"] for b, t in zip(bare, tracked, strict=True)]
    return {
        "bare": _median(bare),
        "tracked": _median(tracked),
        "pairs": [{"bare": b, "tracked": t} for b, t in zip(bare, tracked, strict=True)],
        "ratios": ratios,
        "ratio": statistics.median(ratios),
    }


def _noop(url: str, connections: int, runs: int) -> dict[str, float]:
    """A no-op's rate, median of ``runs`` 2 s runs, with the lowest and highest: each run's
    connections fall across the two workers as they happen to wake (a worker that wakes
    first accepts a burst of them), and a run whose connections all went to one worker
    reads about half the rate of an even one."""
    measured = [_wrk(url, 2, connections) for _ in range(runs)]
    rates = [m["rate"] for m in measured]
    return {**_median(measured), "low": min(rates), "high": max(rates)}


def _ours(logging: bool, port: int) -> list[str]:
    """``serve``'s way of running its workers; with ``logging``, the command line's log
    configuration (WARNING) reaches them, else they stay on structlog's defaults."""
    return [
        sys.executable,
        "-c",
        (
            "from statemachine.signals import logs; "
            "logs.configure_for_cli(verbose=False, json=False); "
            if logging
            else ""
        )
        + "from statemachine.web.reference import run_workers; "
        f"run_workers('bench.webapp:create_app', host='127.0.0.1', port={port}, workers=2)",
    ]


def run(quick: bool) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"missing": "wrk is not installed (apt-get install wrk; .ci/run does it)"}
    seconds, connections, pairs = (1, 8, 1) if quick else (2, 16, 7)
    noops = 1 if quick else 3  # runs of each no-op (see _noop)
    with tempfile.TemporaryDirectory() as directory:
        server, env = _host_env(Path(directory))
        user = reference.Cookies(bytes.fromhex(env[reference.ENV_SECRET])).sign(
            "bench-user", wrong_key=False
        )
        results: dict[str, Any] = {}
        try:
            assert server.process is not None
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
                results["noop_uvicorn"] = _noop(f"http://127.0.0.1:{port}/noop", connections, noops)
            finally:
                _stop(trap)
            port = free_port()
            ours = _start(_ours(True, port), env, port)
            try:
                base = f"http://127.0.0.1:{port}"
                results["noop_ours"] = _noop(f"{base}/noop", connections, noops)
                for path in ("/bare", TOKEN):  # warm both paths up
                    _wrk(f"{base}{path}", 1, connections, SERVE_LUA, args=_run(user))
                watch = {"workers": ours.pid, "redis": server.process.pid}
                results |= _alternate(base, seconds, connections, pairs, watch, user)
            finally:
                _stop(ours)
            port = free_port()
            ours = _start(_ours(False, port), env, port)
            try:
                base = f"http://127.0.0.1:{port}"
                _wrk(f"{base}{TOKEN}", 1, connections, SERVE_LUA, args=_run(user))
                watch = {"workers": ours.pid, "redis": server.process.pid}
                results["tracked_default_logs"] = _wrk(
                    f"{base}{TOKEN}", seconds, connections, SERVE_LUA, watch, _run(user)
                )
            finally:
                _stop(ours)
            results["shares"] = _shares(env, user, quick)
        finally:
            server.stop()
        results["seconds"], results["connections"] = seconds, connections
        return results


def cpu_bound_ratio(r: dict[str, Any]) -> float:
    """What the ratio would be if CPU alone decided: bare's CPU per request over tracked's
    (workers and redis-server), medians over the pairs."""
    bare, tracked = r["bare"], r["tracked"]
    return float(bare["cpu_workers"] / (tracked["cpu_workers"] + tracked["cpu_redis"]))


def _pair_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        "| pair | bare req/s | tracked req/s | tracked / bare | CPU per request, bare: "
        "workers | tracked: workers + redis-server | cores busy with wrk / with other work "
        "(bare; tracked) |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, (pair, ratio) in enumerate(zip(r["pairs"], r["ratios"], strict=True), start=1):
        b, t = pair["bare"], pair["tracked"]
        lines.append(
            f"| {number}{' (tracked first)' if number % 2 == 0 else ''} | {b['rate']:,.0f} | "
            f"{t['rate']:,.0f} | {ratio:.2f}x | {us(b['cpu_workers'])} | "
            f"{us(t['cpu_workers'])} + {us(t['cpu_redis'])} | "
            f"{b['cores_wrk']:.2f} / {b['cores_others']:.2f}; "
            f"{t['cores_wrk']:.2f} / {t['cores_others']:.2f} |"
        )
    return [*lines, ""]


def shares(r: dict[str, Any]) -> dict[str, float]:
    """Each layer's CPU per tracked request (one worker's process, in-process ASGI)."""
    m = r["shares"]
    return {
        "mint": m["mint"],
        "tracker": m["memory"] - m["mint"],
        "redis": m["redis"] - m["memory"],
        "web": m["asgi_tracked"] - m["redis"],
        "bare_web": m["asgi_bare"] - m["mint"],
        "web_alone": m["web_alone"],
    }


def _share_lines(r: dict[str, Any]) -> list[str]:
    if "shares" not in r:
        return []
    m, s = r["shares"], shares(r)
    return [
        "Where a tracked request's CPU goes in one worker (in-process, the app driven over "
        "ASGI without a server, 8 requests in flight, alternating batches, medians of the "
        "thread's CPU time):",
        "",
        "| part | CPU per request | how |",
        "|---|---|---|",
        f"| the mint | {us(s['mint'])} | `TokenIssuer.issue` alone |",
        f"| the tracker's own Python, metrics listener on | {us(s['tracker'])} | "
        f"`token_request` on a memory store ({us(m['memory'])}) minus the mint |",
        f"| the Redis store: two script calls, the client's side (the round trips' socket "
        "work and the event loop's wake-ups) | "
        f"{us(s['redis'])} | `token_request` on serve's Redis ({us(m['redis'])}) minus the "
        "same on a memory store |",
        f"| the web layer: Starlette, the adapter, the HTTP core's rules, the cookies, JSON in "
        f"and out | {us(s['web'])} | serve's app over ASGI ({us(m['asgi_tracked'])}) minus "
        "`token_request` on the same tracker |",
        f"| the bare endpoint's own web layer, for comparison | {us(s['bare_web'])} | the bare "
        f"endpoint over ASGI ({us(m['asgi_bare'])}) minus the mint |",
        f"| the web layer alone, steadier | {us(s['web_alone'])} | serve's app over ASGI, its "
        "tracker replaying one real answer: no mint, no store (so warmer caches than in a "
        "real request) |",
        "",
        "Both endpoints also pay uvicorn (h11) per request in the workers: the rest of the "
        "CPU per request measured under wrk above.",
        "",
    ]


def report(r: dict[str, Any]) -> list[str]:
    if "missing" in r:
        return ["## 7. Web", "", f"Not run: {r['missing']}.", ""]

    def row(name: str, m: dict[str, float]) -> str:
        return (
            f"| {name} | {m['rate']:,.0f} | {ms(m['p50'])} | {ms(m['p99'])} | {int(m['errors'])} |"
        )

    ratio, ratios = r["ratio"], r["ratios"]
    bare, tracked = r["bare"], r["tracked"]
    pairs = len(ratios)
    return [
        "## 7. Web: `secured-activation serve`'s token endpoint on 2 workers and Redis",
        "",
        f"`wrk -t2 -c{r['connections']}` on loopback against serve's own app (the reference "
        "host on Redis: visitor and signed-in user from their cookies, the metrics listener "
        "on) and a bare endpoint in the same workers (read the signed user cookie, parse the "
        "body, mint, answer); every request a new visitor's first token request, so both "
        f"mint once per request. {pairs} pairs of {r['seconds']} s runs, bare and tracked "
        "alternating (the order flips every pair); medians over the pairs. Target: tracked "
        f"≥ {GOAL}x bare.",
        "",
        "| endpoint | requests/s | p50 | p99 | non-2xx |",
        "|---|---|---|---|---|",
        row(f"no-op, uvicorn's own `--workers 2`{_spread(r['noop_uvicorn'])}", r["noop_uvicorn"]),
        row(
            f"no-op, `run_workers` (2 workers, socket bound as TCP){_spread(r['noop_ours'])}",
            r["noop_ours"],
        ),
        row("bare: signed cookie, parse, mint, answer (median)", bare),
        row("tracked: `POST /activation/token` on Redis (median)", tracked),
        row(
            "tracked, workers on structlog's defaults (every transition to stdout; one run)",
            r["tracked_default_logs"],
        ),
        "",
        f"Tracked / bare: **{ratio:.2f}x** (median of {pairs} pairs; "
        f"{min(ratios):.2f} to {max(ratios):.2f}x) ({'met' if ratio >= GOAL else 'MISSED'}).",
        "",
        *_pair_lines(r),
        "CPU per request (`/proc`, the supervisor and its two workers; redis-server), medians: "
        f"bare {us(bare['cpu_workers'])} in the workers; tracked {us(tracked['cpu_workers'])} "
        f"in the workers and {us(tracked['cpu_redis'])} in redis-server. By CPU alone the "
        f"tracked endpoint would reach **{cpu_bound_ratio(r):.2f}x**; the rest of a gap is "
        "waiting (each token request's two Redis round trips wait for redis-server to be "
        "scheduled on the cores wrk and the workers share).",
        "",
        *_share_lines(r),
        "The workers log as `secured-activation serve`'s do: the command line's configuration "
        "(WARNING, to stderr) reaches every worker. The last row is the same endpoint with "
        "workers left on structlog's defaults, as every worker was before: two rendered info "
        "lines per token request.",
        "",
        "The first two rows are the transport trap: uvicorn's multi-worker mode bound its socket "
        "without naming TCP (`socket.socket(AF_INET)`, protocol 0) until its fix of issue #3149 "
        "(0.55.0 has it), and asyncio sets TCP_NODELAY only on sockets whose protocol is "
        "`IPPROTO_TCP`; a response written in two parts then waited for the client's delayed ACK "
        "(~40 ms: 364 req/s at a flat 44 ms, bench/NOTES.md). `run_workers` (used by "
        "`secured-activation serve`) binds the socket itself as TCP, whatever the uvicorn release; "
        f"this run's uvicorn is {_uvicorn_version()}.",
        "",
    ]


# -- where a tracked request's CPU goes, in one worker's process (no HTTP server, no wrk) -------


class _Asgi:
    """Drives an ASGI app in-process as uvicorn would: serve.lua's request, one at a time per
    task (a new visitor each), the answer checked."""

    def __init__(self, app: Any, user: str) -> None:
        self.app, self.user = app, user
        self.prefix, self.counter = secrets.token_hex(8), 0

    async def __call__(self, path: str) -> None:
        self.counter += 1
        visitor = f"{self.prefix}{self.counter:016x}"
        body = f'{{"flow":"f{visitor}"}}'.encode()
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"cookie", f"sa_visitor={visitor}; sa_user={self.user}".encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        scope = {**http_scope("POST", path, headers), "state": {}}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.app(scope, receive, send)
        assert status == [200], status


def _token_core(app: Any) -> Any:
    """The HTTP core behind the app's token route (to reach its tracker)."""
    from statemachine.web.routes import _Endpoint

    for route in app.router.routes:
        endpoint = getattr(route, "app", None)
        if isinstance(endpoint, _Endpoint) and endpoint.template == TOKEN:
            return getattr(endpoint.handle, "__self__")  # noqa: B009
    raise LookupError(TOKEN)


class _Replay:
    """A tracker that answers every token request with the first real answer, without
    minting: the web layer measured alone, its answer as large as a real one."""

    def __init__(self, tracker: Any) -> None:
        self.tracker, self.reply = tracker, None

    async def token_request(self, visitor: str, flow: str, provider: Any) -> Any:
        if self.reply is None:
            self.reply = await self.tracker.token_request(visitor, flow, provider)
        return self.reply


async def _cpu_per_call(call: Any, number: int, tasks: int = 8) -> float:
    """CPU seconds of this thread per call, ``tasks`` calls in flight (as a worker has)."""
    left = iter(range(number))

    async def worker() -> None:
        for _ in left:
            await call()

    started = time.thread_time()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return (time.thread_time() - started) / number


async def _measure_shares(env: dict[str, str], user: str, quick: bool) -> dict[str, float]:
    from bench.webapp import create_app
    from policies import DefensivePolicy
    from statemachine.signals.metrics import ActivationMetrics
    from statemachine.stores.memory import MemoryStore
    from statemachine.tokens import TokenIssuer
    from statemachine.tracking._faces import AsyncActivationTracker

    app = create_app()
    asgi = _Asgi(app, user)
    tracker = _token_core(app).tracker  # serve's own: Redis, the metrics listener
    alone = create_app()  # the same app, its tracker answering one real reply over and over
    _token_core(alone).tracker = _Replay(tracker)
    asgi_alone = _Asgi(alone, user)
    in_memory = AsyncActivationTracker(DefensivePolicy(), MemoryStore())
    in_memory.add_listener(ActivationMetrics())
    keys = Path(env[reference.ENV_KEYS])
    issuer = TokenIssuer(keys / "brand_private.pem", keys / "platform_public.pem", reference.ISSUER)
    counter, nonce = iter(range(10**9)), secrets.token_hex(8)

    async def mint() -> str:
        return issuer.issue("bench-user")

    async def direct(on: Any) -> None:
        visitor = f"{nonce}{next(counter):016x}"
        await on.token_request(visitor, f"f{visitor}", mint)

    calls = {
        "mint": mint,
        "memory": lambda: direct(in_memory),
        "redis": lambda: direct(tracker),
        "asgi_tracked": lambda: asgi(TOKEN),
        "asgi_bare": lambda: asgi("/bare"),
        "web_alone": lambda: asgi_alone(TOKEN),
    }
    number, rounds = (50, 1) if quick else (300, 7)
    for call in calls.values():
        await _cpu_per_call(call, number // 3)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            samples[name].append(await _cpu_per_call(calls[name], number))
    await tracker.store.aclose()
    return {name: statistics.median(values) for name, values in samples.items()}


def _shares(env: dict[str, str], user: str, quick: bool) -> dict[str, float]:
    """CPU per request of each layer in one worker's process, alternating batches, medians:
    the mint; the tracker on a memory store (its own Python and the metrics listener); on
    serve's Redis (plus redis-py and the store); serve's whole app over ASGI (plus Starlette,
    the web layer, the cookies); the bare endpoint over ASGI."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return asyncio.run(_measure_shares(env, user, quick))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

"""The ``secured-activation`` command line.

Every error is one line on stderr and a non-zero exit status; no traceback
reaches the user. Tokens are only ever printed by ``token issue``, whose job
it is; everywhere else a fingerprint stands in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from statemachine.protocol.options import fingerprint
from statemachine.protocol.policy import Profile
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.table import STATE_MEANINGS, rows_for
from statemachine.signals import logs
from statemachine.tools import diagrams

PROG = "secured-activation"


class UsageError(Exception):
    """Bad command-line input: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{_redact(message)} (see '{self.prog} --help')")


_LONG_WORD = re.compile(r"[^\s',]{41,}")


def _redact(text: str) -> str:
    """argparse quotes the arguments it refuses; a token pasted there must not be echoed."""
    return _LONG_WORD.sub(
        lambda m: f"<{len(m.group())} characters, {fingerprint(m.group())}>", text
    )


def _policy_arg(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    parser.add_argument(
        "--policy",
        choices=tuple(diagrams.PROFILES),
        default=default,
        help="fallback policy" + (" (default: both)" if default is None else ""),
    )


def build_parser() -> argparse.ArgumentParser:
    from statemachine.tools.demo import SCENARIO_NAMES

    parser = _Parser(
        prog=PROG,
        description="Secured authentication activation of a conversational web tag, "
        "as an explicit state machine.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    demo = commands.add_parser("demo", help="run the scenarios on throwaway keys and real tokens")
    _policy_arg(demo, default=None)
    demo.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIO_NAMES)}",
    )
    demo.add_argument("--json", action="store_true", help="one JSON object per line")
    demo.add_argument("--list", action="store_true", help="list the scenarios and exit")
    demo.add_argument("--verbose", action="store_true", help="also log every event to stderr")

    diagram = commands.add_parser("diagram", help="draw the state machine")
    _policy_arg(diagram, default="defensive")
    diagram.add_argument("--format", choices=diagrams.FORMATS, default="mermaid")
    diagram.add_argument(
        "--output",
        type=Path,
        metavar="PATH",
        help="write here instead of stdout (a folder with --all)",
    )
    diagram.add_argument(
        "--all",
        action="store_true",
        help="write every policy and format into --output (default: diagrams/)",
    )

    table = commands.add_parser("table", help="print the transition table the machine runs")
    _policy_arg(table, default="defensive")

    keys = commands.add_parser("keys", help="RSA key pairs")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=_Parser)
    key_commands.required = True
    generate = key_commands.add_parser("generate", help="write brand and platform key pairs")
    generate.add_argument("directory", type=Path, metavar="DIR")

    token = commands.add_parser("token", help="mint or diagnose tokens")
    token_commands = token.add_subparsers(
        dest="token_command", metavar="ACTION", parser_class=_Parser
    )
    token_commands.required = True
    issue = token_commands.add_parser("issue", help="mint a token (printed on stdout)")
    issue.add_argument("--signing-key", required=True, type=Path, help="brand private key (PEM)")
    issue.add_argument(
        "--encryption-key", required=True, type=Path, help="platform public key (PEM)"
    )
    issue.add_argument("--user-id", required=True)
    issue.add_argument("--issuer", default="secured-activation")
    issue.add_argument("--lifetime", type=int, default=60, help="seconds (default 60)")
    issue.add_argument("--visitor-data", metavar="JSON", help="a JSON object of visitor data")

    verify = token_commands.add_parser("verify", help="diagnose a token offline, check by check")
    verify.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")
    verify.add_argument("--decryption-key", required=True, type=Path, help="platform private key")
    verify.add_argument("--verification-key", required=True, type=Path, help="brand public key")
    verify.add_argument("--issuer", help="expected issuer (not checked when omitted)")
    verify.add_argument("--leeway", type=float, default=5.0, help="clock skew allowed, seconds")
    verify.add_argument("--json", action="store_true")

    serve = commands.add_parser(
        "serve", help="the reference web host: sign-in, snippet, stand-in tag, inspector"
    )
    serve.add_argument(
        "--policy",
        default="defensive",
        metavar="defensive|anonymous|FILE",
        help="fallback policy, or a TOML policy file (default: defensive)",
    )
    serve.add_argument("--redis", metavar="URL", help="share visitors through Redis")
    serve.add_argument(
        "--redis-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds per Redis call before the policy answers (default: the store's, 0.5)",
    )
    serve.add_argument(
        "--workers", type=_workers, default=1, help="worker processes (above 1 needs --redis)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    _run_parser(commands)

    check_store = commands.add_parser(
        "check-store",
        help="check a Redis deployment for the tracker (reachable, noeviction, clock, topology)",
    )
    check_store.add_argument(
        "url",
        metavar="URL",
        help="redis://, rediss://, redis+cluster://h:p[,h:p] or redis+sentinel://h:p[,h:p]/service",
    )
    check_store.add_argument(
        "--timeout", type=float, default=1.0, help="seconds per command (default 1)"
    )
    return parser


# -- run: your own ASGI app on several workers ---------------------------------
def _run_parser(commands: Any) -> None:
    run = commands.add_parser(
        "run", help="run your ASGI app (MODULE:APP) on worker processes, socket bound as TCP"
    )
    run.add_argument("app", metavar="MODULE:APP", type=_app_target, help="e.g. myhost:app")
    run.add_argument("--workers", type=_workers, default=1, help="worker processes (default 1)")
    run.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    run.add_argument("--factory", action="store_true", help="APP is a function returning the app")
    run.add_argument(
        "--app-dir", default=".", help="directory put first on the import path (default .)"
    )


_APP_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _app_target(text: str) -> str:
    if not _APP_TARGET.fullmatch(text):
        raise argparse.ArgumentTypeError("must be MODULE:APP, e.g. myhost:app")
    return text


def _run(args: argparse.Namespace) -> int:
    try:
        from statemachine.web.serving import TargetError, run_workers
    except ImportError:  # pragma: no cover - uvicorn comes with every web extra
        raise UsageError("run needs uvicorn: pip install -e '.[web]'") from None
    where = f"[{args.host}]" if ":" in args.host else args.host

    def announce() -> None:  # once the app has loaded and the port is ours
        print(
            f"{PROG} run: {args.app} on http://{where}:{args.port} ({args.workers} "
            f"worker{'s' if args.workers > 1 else ''}); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )

    try:
        run_workers(
            args.app,
            host=args.host,
            port=args.port,
            workers=args.workers,
            factory=args.factory,
            app_dir=args.app_dir,
            ready=announce,
        )
    except TargetError as error:
        raise UsageError(f"cannot load {args.app}: {error}") from None
    return 0


def _workers(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 32:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 32")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value <= 60:  # NaN fails too
        raise argparse.ArgumentTypeError("must be a number of seconds above 0, at most 60")
    return value


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError("must be a port number from 0 to 65535")
    return int(text)


def _serve(args: argparse.Namespace) -> int:
    if args.workers > 1 and not args.redis:
        raise UsageError(
            "--workers above 1 needs --redis: the in-memory store belongs to one process"
        )
    try:
        from statemachine.web.reference import serve
    except ImportError:
        raise UsageError(
            "serve needs the web extra: pip install -e '.[web]' in your clone of secured-activation"
        ) from None
    if args.redis_timeout is not None and not args.redis:
        raise UsageError("--redis-timeout needs --redis")
    return serve(
        policy=args.policy,
        redis=args.redis,
        workers=args.workers,
        host=args.host,
        port=args.port,
        redis_timeout=args.redis_timeout,
    )


# -- demo ---------------------------------------------------------------------
def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from statemachine.tools import demo

    if args.list:
        for scenario in demo.SCENARIOS:
            print(f"{scenario.name:28} {scenario.description}", file=out)
        return 0
    chosen = list(demo.SCENARIOS)
    if args.scenario:
        unknown = [n for n in args.scenario if n not in demo.SCENARIO_NAMES]
        if unknown:
            raise UsageError(
                f"unknown scenario {unknown[0]!r} (valid: {', '.join(demo.SCENARIO_NAMES)})"
            )
        chosen = [s for s in demo.SCENARIOS if s.name in args.scenario]
    policies = [args.policy] if args.policy else list(demo.POLICY_NAMES)
    runs = asyncio.run(demo.run_all(chosen, policies))
    if args.json:
        for run in runs:
            print(json.dumps(run.to_dict(), sort_keys=True), file=out)
        return 0
    descriptions = {s.name: s.description for s in demo.SCENARIOS}
    print(_demo_intro(demo.DEMO_RETRY), file=out)
    for run in runs:
        print(f"== {run.scenario} / {run.policy} policy: {descriptions[run.scenario]}", file=out)
        for step in run.steps:
            print(f"   {step.call}", file=out)
            for e in step.transitions:
                attempt = f"#{e.attempt}" if e.attempt else ""
                reason = f" ({e.reason.name})" if e.reason else ""
                print(
                    f"     {e.source.value:>20} -> {e.dest.value:<20} {e.trigger.value:<21}"
                    f"{attempt:>3}  {demo.why(e)}{reason}",
                    file=out,
                )
            if not step.transitions:
                print("     (no transition: the call was refused and changed nothing)", file=out)
            for r in step.results:
                print(f"     => {json.dumps(r.to_safe_dict())}", file=out)
        print(
            f"   final state: {run.final_state.value}, secured attempts: {run.attempts}\n", file=out
        )
    _summary(runs, policies, out)
    return 0


def _demo_intro(retry: Any) -> str:
    """The demo's opening lines; the retry line is read from the demo's own retry policy."""
    reasons = ", ".join(sorted(r.name.lower().replace("_", " ") for r in retry.retry_on))
    return f"""\
secured-activation demo: throwaway RSA keys, real JWE tokens, the local activator.
  defensive policy: never activate without a verified identity (blocked instead)
  anonymous policy: fall back to an anonymous activation when the secured one fails
  retries: up to {retry.max_retries} after a retryable failure ({reasons}),
  each with a fresh token; a missing token is never retried.
Tokens are shown as fingerprints. The state diagrams: 'secured-activation diagram'.
"""


def _summary(runs: list[Any], policies: list[str], out: TextIO) -> None:
    finals = {(r.scenario, r.policy): r.final_state.value for r in runs}
    scenarios = list(dict.fromkeys(r.scenario for r in runs))
    width = max(len(s) for s in scenarios) + 2
    print("summary: final state by scenario and policy", file=out)
    print(f"{'scenario':<{width}}" + "".join(f"{p:<18}" for p in policies), file=out)
    for s in scenarios:
        print(f"{s:<{width}}" + "".join(f"{finals[(s, p)]:<18}" for p in policies), file=out)


# -- diagram and table --------------------------------------------------------
def _diagram(args: argparse.Namespace, out: TextIO) -> int:
    if args.all:
        folder = args.output or Path("diagrams")
        for path in diagrams.write_all(folder):
            print(f"wrote {path}", file=out)
        return 0
    text = diagrams.render(args.policy, args.format)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=out)
    else:
        out.write(text)
    return 0


def _table(args: argparse.Namespace, out: TextIO) -> int:
    profile: Profile = diagrams.PROFILES[args.policy]
    print(f"states ({args.policy} policy):", file=out)
    for state, meaning in STATE_MEANINGS.items():
        print(f"  {state.value:<22} {meaning}", file=out)
    print("transitions:", file=out)
    rows = rows_for(profile)
    for row in rows:
        print(
            f"  {row.source.value:<22} {diagrams.edge_label(row, rows):<60} -> "
            f"{row.dest.value:<22} {row.why}",
            file=out,
        )
    print("reasons (what to check):", file=out)
    for reason in FailureReason:
        print(f"  {reason.name:<22} {reason.remediation}", file=out)
    return 0


# -- keys and tokens ----------------------------------------------------------
def _keys(args: argparse.Namespace, out: TextIO) -> int:
    from statemachine.tokens import write_key_pairs

    for path in write_key_pairs(args.directory):
        print(f"wrote {path}", file=out)
    return 0


def _token_issue(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from statemachine.tokens import TokenIssuer
    from statemachine.tokens.verifier import strict_json

    visitor = None
    if args.visitor_data is not None:
        try:
            visitor = strict_json(args.visitor_data.encode("utf-8", "surrogatepass"))
        except ValueError as error:
            raise UsageError(f"--visitor-data is not valid JSON ({_redact(str(error))})") from None
    issuer = TokenIssuer(args.signing_key, args.encryption_key, args.issuer, args.lifetime)
    token = issuer.issue(args.user_id, visitor)
    print(token, file=out)
    print(f"issued {fingerprint(token)}, valid {args.lifetime} s", file=err)
    return 0


def _token_verify(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from statemachine.tokens import MAX_TOKEN_CHARS, TokenVerifier

    # Read no further than a token can go (with room for spacing around it): an endless
    # stdin (``< /dev/zero``) would be read until memory ran out. Past the bound, the
    # verifier's own length check answers.
    token = stdin.read(2 * MAX_TOKEN_CHARS).strip() if args.token == "-" else args.token
    verifier = TokenVerifier(
        args.decryption_key, args.verification_key, issuer=args.issuer, leeway=args.leeway
    )
    diagnosis = verifier.diagnose(token)
    if args.json:
        print(
            json.dumps(
                {
                    "token": fingerprint(token),
                    "valid": diagnosis.valid,
                    "reason": diagnosis.reason.name if diagnosis.reason else None,
                    "remediation": diagnosis.reason.remediation if diagnosis.reason else None,
                    "checks": [
                        {"name": c.name, "passed": c.passed, "detail": c.detail}
                        for c in diagnosis.checks
                    ],
                }
            ),
            file=out,
        )
    else:
        print(f"token {fingerprint(token)}", file=out)
        names = [c.name for c in diagnosis.checks]
        for check in diagnosis.checks:
            print(
                f"  {'PASS' if check.passed else 'FAIL'}  {check.name:<11} {check.detail}", file=out
            )
        from statemachine.tokens import CHECKS

        for name in CHECKS:
            if name not in names:
                print(f"  ----  {name:<11} not reached", file=out)
        if diagnosis.reason is None:
            print("valid", file=out)
        else:
            print(f"invalid: {diagnosis.reason.name} - {diagnosis.reason.message}", file=out)
            print(f"check: {diagnosis.reason.remediation}", file=out)
    return 0 if diagnosis.valid else 1


def main(argv: Sequence[str] | None = None) -> int:
    out, err = sys.stdout, sys.stderr
    from policies import PolicyError
    from statemachine.tokens import KeyLoadError, TokenError

    try:
        args = build_parser().parse_args(argv)
        logs.configure_for_cli(
            verbose=getattr(args, "verbose", False),
            json=getattr(args, "json", False),
            quiet=args.command == "demo",
        )
        if args.command == "demo":
            return _demo(args, out)
        if args.command == "diagram":
            return _diagram(args, out)
        if args.command == "table":
            return _table(args, out)
        if args.command == "serve":
            return _serve(args)
        if args.command == "run":
            return _run(args)
        if args.command == "keys":
            return _keys(args, out)
        if args.command == "check-store":
            from statemachine.stores import check

            return check.main(args.url, out, timeout=args.timeout)
        if args.token_command == "issue":
            return _token_issue(args, out, err)
        return _token_verify(args, out, sys.stdin)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=err)
        return 2
    except (diagrams.DiagramError, KeyLoadError, PolicyError, ValueError, OSError) as error:
        message = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        where = f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""
        print(f"{PROG}: error: {message}{where}", file=err)
        return 1
    except TokenError as error:
        print(f"{PROG}: error: {error}", file=err)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return 130
    except Exception as error:  # noqa: BLE001 - one line, never a traceback
        print(f"{PROG}: error: unexpected {type(error).__name__}", file=err)
        return 1


def run() -> NoReturn:
    sys.exit(main())

"""Every command and flag of the CLI, run as a real subprocess where it matters."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from statemachine import FailureReason, State
from statemachine.protocol.table import TRANSITIONS
from statemachine.tools.cli import main
from statemachine.tools.demo import DEMO_RETRY, POLICY_NAMES, SCENARIO_NAMES

ROOT = Path(__file__).resolve().parents[1]


def cli(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statemachine", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr + done.stdout


@pytest.fixture(scope="module")
def demo_json() -> list[dict[str, Any]]:
    done = cli("demo", "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_demo_runs_every_scenario_under_both_policies(demo_json: list[dict[str, Any]]) -> None:
    assert {(r["scenario"], r["policy"]) for r in demo_json} == {
        (s, p) for s in SCENARIO_NAMES for p in POLICY_NAMES
    }
    finals = {(r["scenario"], r["policy"]): r["final_state"] for r in demo_json}
    assert finals[("happy-path", "defensive")] == "authenticated"
    assert finals[("backend-down", "defensive")] == "blocked"
    assert finals[("backend-down", "anonymous")] == "anonymous"
    assert finals[("wrong-key", "defensive")] == "blocked"
    assert finals[("expired-token", "anonymous")] == "anonymous"
    assert finals[("flaky-platform", "defensive")] == "authenticated"
    assert finals[("platform-down", "defensive")] == "blocked"
    attempts = {(r["scenario"], r["policy"]): r["attempts"] for r in demo_json}
    assert attempts[("flaky-platform", "anonymous")] == 3
    assert attempts[("platform-down", "defensive")] == 4
    reasons = [
        res["authentication"].get("reason")
        for r in demo_json
        if r["scenario"] == "double-login"
        for step in r["steps"]
        for res in step["results"]
    ]
    assert "A login is already ongoing" in reasons


def test_demo_output_shows_fingerprints_never_tokens(demo_json: list[dict[str, Any]]) -> None:
    tokens = [
        res["authentication"]["option"].get("token")
        for r in demo_json
        for step in r["steps"]
        for res in step["results"]
    ]
    shown = [t for t in tokens if t is not None]
    assert shown
    assert all(re.fullmatch(r"sha256:[0-9a-f]{16}", t) for t in shown)


def test_demo_human_output_and_summary() -> None:
    done = cli("demo")
    assert done.returncode == 0
    no_traceback(done)
    out = done.stdout
    assert "summary: final state by scenario and policy" in out
    for name in SCENARIO_NAMES:
        assert re.search(rf"^{re.escape(name)}\s+\w+\s+\w+\s*$", out, re.M), name
    assert "eyJ" not in out  # no JOSE header (every JWE starts with it) anywhere
    assert "fetching_token -> activating" in out
    retried = re.search(r"retries: up to (\d+) after a retryable failure \(([^)]*)\)", out)
    assert retried is not None
    assert int(retried[1]) == DEMO_RETRY.max_retries
    named = {name.strip().upper().replace(" ", "_") for name in retried[2].split(",")}
    assert named == {reason.name for reason in DEMO_RETRY.retry_on}  # UNKNOWN too


def test_demo_filters_by_scenario_and_policy() -> None:
    done = cli("demo", "--scenario", "wrong-key", "--policy", "anonymous", "--json")
    runs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["scenario"], r["policy"], r["final_state"]) for r in runs] == [
        ("wrong-key", "anonymous", "anonymous")
    ]


def test_demo_list() -> None:
    done = cli("demo", "--list")
    assert done.returncode == 0
    assert [line.split()[0] for line in done.stdout.splitlines()] == list(SCENARIO_NAMES)


def test_demo_verbose_logs_to_stderr_without_tokens() -> None:
    done = cli("demo", "--scenario", "happy-path", "--policy", "defensive", "--verbose")
    assert done.returncode == 0
    assert "activation.transition" in done.stderr
    assert "eyJ" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("demo", "--scenario", "nope"), "unknown scenario 'nope' (valid: happy-path"),
        (("demo", "--policy", "reckless"), "invalid choice: 'reckless'"),
        (("diagram", "--format", "png"), "invalid choice: 'png'"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        ((), "the following arguments are required: COMMAND"),
        (("token", "verify", "x"), "required: --decryption-key, --verification-key"),
        (("token",), "required: ACTION"),
        (("keys",), "required: ACTION"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: tuple[str, ...], needle: str) -> None:
    done = cli(*args)
    assert done.returncode == 2
    no_traceback(done)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("secured-activation: error: ")
    assert needle in lines[0]


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_diagram_matches_the_committed_file(policy: str, fmt: str) -> None:
    done = cli("diagram", "--policy", policy, "--format", fmt)
    assert done.returncode == 0
    ext = {"mermaid": "mmd", "dot": "dot"}[fmt]
    committed = (ROOT / "diagrams" / f"{policy}.{ext}").read_text()
    assert done.stdout == committed, (
        f"diagrams/{policy}.{ext} is stale: run 'secured-activation diagram --all'"
    )


def test_diagram_draws_every_transition_of_its_policy() -> None:
    from statemachine.protocol.table import rows_for
    from statemachine.tools.diagrams import PROFILES, dot, edge_label, mermaid

    for profile in PROFILES.values():
        rows = rows_for(profile)
        text, graph = mermaid(profile), dot(profile)
        for row in rows:
            label = edge_label(row, rows)
            assert f"{row.source.value} --> {row.dest.value}: {label}" in text
            assert f'{row.source.value} -> {row.dest.value} [label="{label}"' in graph
        for state in State:
            assert state.value in text
            assert state.value in graph
    assert all(any(r in rows_for(p) for p in PROFILES.values()) for r in TRANSITIONS)


def test_defensive_drawing_has_no_fallback_edge() -> None:
    text = (ROOT / "diagrams" / "defensive.mmd").read_text()
    assert "token_failed" in text
    assert not re.search(r"--> activating_anonymous: (token_failed|activation_failed)", text)
    anonymous = (ROOT / "diagrams" / "anonymous.mmd").read_text()
    assert re.search(r"--> activating_anonymous: token_failed", anonymous)


def test_committed_svgs_are_drawn_from_the_current_dot() -> None:
    from statemachine.tools.diagrams import PROFILES, dot, source_hash, svg_source_hash

    for name, profile in PROFILES.items():
        recorded = svg_source_hash((ROOT / "diagrams" / f"{name}.svg").read_text())
        assert recorded == source_hash(dot(profile)), f"diagrams/{name}.svg is stale"


def test_diagram_output_file_and_all(tmp_path: Path) -> None:
    target = tmp_path / "d.mmd"
    done = cli("diagram", "--policy", "anonymous", "--output", str(target))
    assert done.returncode == 0
    assert target.read_text() == (ROOT / "diagrams" / "anonymous.mmd").read_text()
    done = cli("diagram", "--all", "--output", str(tmp_path / "all"), "--format", "mermaid")
    if done.returncode == 0:  # with Graphviz installed, every format is written
        assert (tmp_path / "all" / "defensive.svg").exists()
    else:
        assert "apt-get install graphviz" in done.stderr
        no_traceback(done)


def test_svg_without_graphviz_says_how_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "statemachine", "diagram", "--format", "svg"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    no_traceback(done)
    assert "needs Graphviz's 'dot' program" in done.stderr
    assert "apt-get install graphviz" in done.stderr


def test_table_lists_every_row_with_its_reason() -> None:
    done = cli("table", "--policy", "anonymous")
    assert done.returncode == 0
    for row in TRANSITIONS:
        if row.branch is None or row.branch.fallback.value == "anonymous":
            assert row.why in done.stdout


def test_table_gives_every_reason_its_remediation() -> None:
    done = cli("table")
    assert done.returncode == 0
    section = done.stdout.split("reasons (what to check):", 1)[1]
    for reason in FailureReason:
        assert re.search(rf"^  {reason.name}\s+{re.escape(reason.remediation)}$", section, re.M)


def test_keys_issue_verify_round_trip(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    done = cli("keys", "generate", str(keys))
    assert done.returncode == 0
    assert oct((keys / "brand_private.pem").stat().st_mode & 0o777) == "0o600"
    again = cli("keys", "generate", str(keys))
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr

    issued = cli(
        "token",
        "issue",
        "--signing-key",
        str(keys / "brand_private.pem"),
        "--encryption-key",
        str(keys / "platform_public.pem"),
        "--user-id",
        "visitor-1",
        "--issuer",
        "brand",
        "--visitor-data",
        '{"firstName": "Ada"}',
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.count(".") == 4
    assert token not in issued.stderr
    assert "issued sha256:" in issued.stderr

    verify = [
        "token",
        "verify",
        "-",
        "--decryption-key",
        str(keys / "platform_private.pem"),
        "--verification-key",
        str(keys / "brand_public.pem"),
        "--issuer",
        "brand",
    ]
    ok = cli(*verify, stdin=token)
    assert ok.returncode == 0
    assert ok.stdout.strip().endswith("valid")
    assert token not in ok.stdout
    for check in ("format", "algorithms", "decryption", "signature", "claims", "expiry"):
        assert re.search(rf"PASS\s+{check}", ok.stdout)

    bad = cli(*verify[:2], token[:-4] + "AAAA", *verify[3:])
    assert bad.returncode == 1
    assert "FAIL  decryption" in bad.stdout
    assert "not reached" in bad.stdout
    assert "DECRYPTION_FAILED" in bad.stdout
    assert f"check: {FailureReason.DECRYPTION_FAILED.remediation}" in bad.stdout

    wrong_issuer = cli(*verify[:-1], "someone-else", "--json", stdin=token)
    report = json.loads(wrong_issuer.stdout)
    assert wrong_issuer.returncode == 1
    assert report["reason"] == "INVALID_CLAIMS"
    assert report["remediation"] == FailureReason.INVALID_CLAIMS.remediation
    assert report["token"].startswith("sha256:")
    assert token not in wrong_issuer.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            (
                "token",
                "issue",
                "--signing-key",
                "/nonexistent.pem",
                "--encryption-key",
                "/x.pem",
                "--user-id",
                "u",
            ),
            "no key file",
        ),
        (
            (
                "token",
                "verify",
                "abc",
                "--decryption-key",
                "/nonexistent.pem",
                "--verification-key",
                "/x",
            ),
            "no key file",
        ),
    ],
)
def test_operational_errors_are_one_line(args: tuple[str, ...], needle: str) -> None:
    done = cli(*args)
    assert done.returncode == 1
    no_traceback(done)
    assert len(done.stderr.strip().splitlines()) == 1
    assert needle in done.stderr


def test_issue_refuses_bad_input(tmp_path: Path) -> None:
    cli("keys", "generate", str(tmp_path))
    base = [
        "token",
        "issue",
        "--signing-key",
        str(tmp_path / "brand_private.pem"),
        "--encryption-key",
        str(tmp_path / "platform_public.pem"),
    ]
    long_id = cli(*base, "--user-id", "x" * 256)
    assert long_id.returncode == 1
    assert "more than 255" in long_id.stderr
    bad_json = cli(*base, "--user-id", "u", "--visitor-data", "{nope")
    assert bad_json.returncode == 2
    assert "--visitor-data is not valid JSON" in bad_json.stderr
    swapped = cli(
        "token",
        "issue",
        "--signing-key",
        str(tmp_path / "brand_public.pem"),
        "--encryption-key",
        str(tmp_path / "platform_public.pem"),
        "--user-id",
        "u",
    )
    assert swapped.returncode == 1
    assert "needs a private key" in swapped.stderr
    no_traceback(swapped)


def test_console_script_and_module_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagram", "--policy", "defensive"]) == 0
    in_process = capsys.readouterr().out
    assert in_process == cli("diagram", "--policy", "defensive").stdout


def test_demo_stderr_is_quiet_without_verbose() -> None:
    done = cli("demo", "--scenario", "backend-down")
    assert done.returncode == 0
    assert done.stderr == ""
    assert "backend-down" in done.stdout

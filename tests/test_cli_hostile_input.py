"""Hostile command-line input: one line on stderr, a non-zero exit, no hang, no token echoed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, stdin: str = "", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statemachine", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys") / "k"
    assert cli("keys", "generate", str(directory)).returncode == 0
    return directory


def issue(keys: Path, signing: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        "token",
        "issue",
        "--signing-key",
        signing,
        "--encryption-key",
        str(keys / "platform_public.pem"),
        "--user-id",
        "u",
        "--issuer",
        "https://brand.example",
        *extra,
    )


def test_a_dsa_key_is_one_line(keys: Path, tmp_path: Path) -> None:
    private = dsa.generate_private_key(2048)
    path = tmp_path / "dsa.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert "signing key" in one_line_error(issue(keys, str(path)))


def test_deeply_nested_visitor_data_is_a_usage_error(keys: Path) -> None:
    nested = "[" * 2000 + "]" * 2000
    line = one_line_error(issue(keys, str(keys / "brand_private.pem"), "--visitor-data", nested))
    assert "--visitor-data" in line


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_a_key_does_not_hang(keys: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in one_line_error(issue(keys, str(fifo)))


def test_dev_zero_as_a_key_is_refused_at_once(keys: Path) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    assert "not a regular file" in one_line_error(issue(keys, "/dev/zero"))


def test_a_huge_key_file_is_refused(keys: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    header = b"-----BEGIN " + b"PRIVATE KEY-----\n"  # spelled in two parts: no key in the repo
    big.write_bytes(header + b"A" * 200_000)
    assert "not a key" in one_line_error(issue(keys, str(big)))


def test_a_usage_error_never_echoes_a_token(keys: Path) -> None:
    minted = issue(keys, str(keys / "brand_private.pem"))
    token = minted.stdout.strip()
    assert token.count(".") == 4
    done = cli("demo", token)
    line = one_line_error(done)
    assert token not in done.stderr
    assert token[:40] not in done.stderr
    assert "characters, sha256:" in line
    done = cli("token", "verify", "--bogus", token)
    assert token not in done.stderr
    one_line_error(done)


@pytest.mark.parametrize(
    "args",
    [
        ("token", "verify", "-", "--decryption-key", "/dev/null", "--verification-key", "x"),
        ("diagram", "--format", "x" * 5000),
        ("demo", "--scenario", "\x01\u202e"),
    ],
    ids=["dev-null-key", "huge-format", "control-scenario"],
)
def test_hostile_arguments(args: Any) -> None:
    one_line_error(cli(*args, stdin="abc"))


def test_serve_checks_its_redis_timeout_before_serving() -> None:
    """A bad --redis-timeout is a one-line usage error, never a host that starts misconfigured."""
    for bad in ("0", "-1", "nan", "inf", "61", "5s", "\u0661"):  # U+0661: an Arabic-Indic one
        line = one_line_error(
            cli("serve", "--redis", "redis://127.0.0.1:1/0", "--redis-timeout", bad, timeout=60)
        )
        assert "--redis-timeout: must be a number of seconds above 0, at most 60" in line, bad
    line = one_line_error(cli("serve", "--redis-timeout", "5", timeout=60))
    assert "--redis-timeout needs --redis" in line


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_a_policy_file_does_not_hang(tmp_path: Path) -> None:
    """``serve --policy FIFO`` waited for a writer for ever, before binding anything."""
    fifo = tmp_path / "policy.toml"
    os.mkfifo(fifo)
    line = one_line_error(cli("serve", "--policy", str(fifo), "--port", "0", timeout=60))
    assert "not a regular file" in line


def test_dev_zero_and_a_huge_file_as_a_policy_are_refused_at_once(tmp_path: Path) -> None:
    """A policy file was read whole: /dev/zero until memory ran out, a huge file all of it."""
    huge = tmp_path / "policy.toml"
    huge.write_text('fallback = "anonymous"\n' + "#" * (8 << 20) + "\n")
    line = one_line_error(cli("serve", "--policy", str(huge), "--port", "0", timeout=60))
    assert "over 65536 bytes" in line
    if Path("/dev/zero").exists():
        done = _bounded_cli(["serve", "--policy", "/dev/zero", "--port", "0"])
        assert "not a regular file" in one_line_error(done)


def test_an_endless_stdin_for_token_verify_is_read_only_as_far_as_a_token_goes(
    keys: Path,
) -> None:
    """``token verify -`` read stdin whole: ``< /dev/zero`` until memory ran out."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    verify = ["token", "verify", "-", "--decryption-key", str(keys / "platform_private.pem")]
    verify += ["--verification-key", str(keys / "brand_public.pem")]
    with open("/dev/zero", "rb") as endless:
        done = _bounded_cli(verify, stdin=endless)
    assert done.returncode == 1, done.stderr[-300:]
    assert "Traceback" not in done.stderr
    assert "over the 16384 limit" in done.stdout, done.stdout
    assert "MALFORMED_TOKEN" in done.stdout


def _bounded_cli(arguments: list[str], stdin: Any = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own, its address space capped at 2 GiB: a command that
    read ``/dev/zero`` whole would otherwise take the machine's memory, not just its own."""
    import resource

    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run(
        [sys.executable, "-m", "statemachine", *arguments],
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        preexec_fn=bounded,  # no thread of the test runs meanwhile
    )

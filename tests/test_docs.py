"""The README tells the truth: its test command is what CI runs, its drawing is current,
and the examples it points to run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "```sh\nbash .ci/run\n```" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 1
    assert f"`{commands[0]}`" in readme  # the README spells out what it runs
    assert "bash .ci/system-packages" in ci
    assert "redis-server" in (ROOT / ".ci" / "system-packages").read_text()


def _blocks(section: str, end: str) -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text()
    text = readme[readme.index(section) : readme.index(end)]
    return re.findall(r"```(sh|python|toml)\n(.*?)```", text, re.S)


def test_readme_walkthrough_runs_in_order_from_a_fresh_directory(tmp_path: Path) -> None:
    """Every block of the walkthrough, as written, in reading order; no output shows a token."""
    blocks = _blocks("## Walkthrough", "## Hosts: FastAPI, Flask, Django")
    assert [kind for kind, _ in blocks].count("python") >= 3
    bindir = str(Path(sys.executable).parent)
    outputs = []
    for kind, code in blocks:
        if kind == "sh":
            command = ["bash", "-euo", "pipefail", "-c", code.replace(".venv/bin/", bindir + "/")]
        else:
            command = [sys.executable, "-c", code]
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False
        )
        assert done.returncode == 0, f"{code}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout + done.stderr)
    everything = "\n".join(outputs)
    assert "valid" in outputs[-1]
    assert "eyJ" not in "\n".join(outputs[1:-1])  # no python block prints a token
    assert "authenticated" in everything
    assert "A login is already ongoing" in everything
    assert not any(p.name.startswith("token") for p in tmp_path.iterdir())  # nothing left behind


def test_files_named_by_ci_and_readme_exist() -> None:
    for text in ((ROOT / ".ci" / "run").read_text(), (ROOT / "README.md").read_text()):
        for path in re.findall(r"\b((?:tests|bench|docs|examples|statemachine)/[\w/]+\.\w+)", text):
            assert (ROOT / path).exists(), path


def test_readme_serve_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(
        r"^python3 -m venv \.venv && .*'\.\[web\]' && \.venv/bin/secured-activation serve$",
        readme,
        re.M,
    )


def test_readme_policy_sample_loads() -> None:
    import tomllib

    from policies import load_policy

    (toml,) = [code for kind, code in _blocks("### Policies", "### Secrecy") if kind == "toml"]
    policy = load_policy(tomllib.loads(toml))
    assert policy.name == "anonymous"


def test_docs_are_cited_and_exist() -> None:
    design = ROOT / "docs" / "design.md"
    assert design.exists()
    text = design.read_text()
    for section in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert section in text
    for path in [
        *ROOT.glob("statemachine/**/*.py"),
        *ROOT.glob("policies/*.py"),
        ROOT / "README.md",
    ]:
        assert "DESIGN" not in path.read_text(), path


def test_readme_demo_command_runs_the_demo() -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^python3 -m venv \.venv && .*secured-activation demo$", readme, re.M)


def test_readme_drawing_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", readme, re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "diagrams" / "defensive.mmd").read_text()


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_async_host_example_runs() -> None:
    done = _run("async_host.py")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert sum('"authentication-success"' in line for line in lines) == 3
    assert any("-> retrying -> fetching_token" in line for line in lines)
    assert "eyJ" not in done.stdout + done.stderr


def test_token_endpoint_serves_a_verifiable_token(tmp_path: Path) -> None:
    import json
    import urllib.request

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from token_endpoint import serve_in_background
    finally:
        sys.path.pop(0)
    from statemachine.tokens import TokenIssuer, TokenVerifier, generate_rsa

    brand, platform = generate_rsa(), generate_rsa()
    server, url = serve_in_background(TokenIssuer(brand, platform, "b"))
    try:
        request = urllib.request.Request(url, data=b'{"userId": "v-1"}', method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
        bad = urllib.request.Request(url, data=b'{"userId": ""}', method="POST")
        try:
            urllib.request.urlopen(bad, timeout=10)
            raise AssertionError("an empty userId must be refused")
        except urllib.error.HTTPError as error:
            with error:
                assert error.code == 400
    finally:
        server.shutdown()
        server.server_close()
    option = body["authenticationOption"]
    assert option["type"] == "SECURED_AUTHENTICATION"
    assert TokenVerifier(platform, brand).verify(option["token"]).user_id == "v-1"


def _reference_calls() -> list[str]:
    """Every ``Name(parameters)`` the README's constructor table spells out."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Constructors") : readme.index("Session methods:")]
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| `")]
    return [c for row in rows for c in re.findall(r"`([A-Z]\w*(?:\.\w+)?\([^`]*\))`", row)]


def test_readme_constructor_table_matches_the_signatures() -> None:
    """Each parameter the table names exists, in its place (positional or keyword-only), and
    each literal default it states is the code's."""
    import ast
    import inspect

    import policies
    import statemachine
    from statemachine import stores, tokens

    spaces = (statemachine, policies, stores, tokens)
    checked = 0
    for call in _reference_calls():
        name, _, params = call.partition("(")
        params = params[:-1]
        if params == "...":
            continue
        owner, _, method = name.rpartition(".")
        if owner == "Session":  # the table's name for both sessions
            owner = "ActivationSession"
        found = next(s for s in spaces if hasattr(s, owner or method))
        target = getattr(found, owner or method)
        signature = inspect.signature(getattr(target, method) if owner else target)
        documented = [p.strip() for p in re.split(r",\s*(?![^()]*\))", params)]
        keyword_only = False
        for text in documented:
            if text == "*":
                keyword_only = True
                continue
            key, _, default = text.partition("=")
            assert key in signature.parameters, (call, key)
            parameter = signature.parameters[key]
            kind = inspect.Parameter.KEYWORD_ONLY if keyword_only else None
            assert kind is None or parameter.kind is kind, (call, key, "keyword-only")
            assert keyword_only or parameter.kind is not inspect.Parameter.KEYWORD_ONLY, (call, key)
            if default and default != "...":
                try:
                    value = ast.literal_eval(default)
                except (ValueError, SyntaxError):
                    continue  # an expression (min(64, 8 x CPUs), RetryPolicy(), ...): read it
                assert parameter.default == value, (call, key, parameter.default, value)
                checked += 1
    assert checked >= 30, checked


def _cli_help(*words: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "statemachine", *words, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_readme_command_table_names_real_commands_and_options() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Command line") : readme.index("## Name clashes")]
    rows = re.findall(r"^\| `([a-z-]+)((?: [a-z]+)?)([^`]*)`", table, re.M)
    assert len(rows) >= 8
    for command, action, rest in rows:
        words = [command, *action.split()]
        text = _cli_help(*words)
        for option in re.findall(r"--[a-z-]+", rest):
            assert option in text, (words, option)


def test_readme_log_events_are_the_codes() -> None:
    """Every ``activation.*`` event the README names is one the code emits."""
    readme = (ROOT / "README.md").read_text()
    code = "\n".join(p.read_text() for p in ROOT.glob("statemachine/**/*.py"))
    events = set(re.findall(r"`(activation\.[a-z_]+)`", readme))
    assert len(events) >= 8
    for event in events:
        assert f'"{event}"' in code, event


def test_no_message_sends_a_user_to_a_package_index() -> None:
    """The package is not on a package index (the README installs it from a clone): an error
    telling a user to ``pip install 'secured-activation[...]'`` would fetch whatever a
    stranger published under that name."""
    for path in [*ROOT.glob("statemachine/**/*.py"), *ROOT.glob("policies/*.py")]:
        text = path.read_text()
        assert "pip install 'secured-activation" not in text, path
        assert 'pip install "secured-activation' not in text, path

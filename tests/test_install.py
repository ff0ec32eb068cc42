"""What a host gets from the README's install: importable, type-checkable, and loud about clashes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HOST = """\
from policies import DefensivePolicy, load_policy
from statemachine import ActivationSession, ActivationTracker, State
from statemachine.activator import LocalActivator
from statemachine.events import TransitionEvent
from statemachine.metrics import ActivationMetrics
from statemachine.workers import WorkerPool


def state_of(session: ActivationSession) -> State:
    return session.state


TRACKER = ActivationTracker(DefensivePolicy())
DOCUMENTED_PATHS = (LocalActivator, TransitionEvent, ActivationMetrics, WorkerPool)
POLICY = load_policy({"fallback": "anonymous"})
"""


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def test_the_editable_install_is_found_from_anywhere(tmp_path: Path) -> None:
    """The README installs with ``pip install -e``: the packages come from site-packages' .pth."""
    done = run_python("import statemachine, policies; print(statemachine.__file__)", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(ROOT / "statemachine" / "__init__.py")


def test_a_host_type_checks_against_the_editable_install(tmp_path: Path) -> None:
    """mypy --strict from outside the repository sees our packages and their types."""
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}

    def mypy(source: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "host.py").write_text(source)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--strict",
                "--python-executable",
                sys.executable,
                "host.py",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
            check=False,
        )

    done = mypy(HOST)
    assert done.returncode == 0, done.stdout + done.stderr
    done = mypy(HOST + "WRONG: int = TRACKER\n")
    assert done.returncode == 1
    assert 'has type "ActivationTracker"' in done.stdout  # the real types, not Any


def test_python_statemachine_beside_us_is_named_at_import(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "python_statemachine-2.5.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: python-statemachine\n")
    for module in ("statemachine", "policies"):
        done = run_python(f"import {module}", tmp_path, PYTHONPATH=str(site))
        assert done.returncode == 1
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("ImportError: secured-activation cannot run beside")
        assert "python-statemachine 2.5.0" in last


def test_another_statemachine_package_first_on_the_path_is_named(tmp_path: Path) -> None:
    shadow = tmp_path / "site" / "statemachine"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("class StateMachine: ...\n")
    done = run_python("import policies", tmp_path, PYTHONPATH=str(shadow.parent))
    assert done.returncode == 1
    assert "is not secured-activation's" in done.stderr.strip().splitlines()[-1]

"""The benchmarks still run (quick mode). Their numbers are recorded, never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_run_in_quick_mode(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    sections = ("## 1. Engine per visitor", "## 2. Throughput", "## 3. Tokens", "## 4. Retry")
    for section in (
        *sections,
        "## 5. Tracker on Redis",
        "## 6. Listeners and metrics",
        "## 7. Web",
        "## 8. Web rules",
        "## 9. Web frameworks",
        "## 10. Store engines",
        "## 11. Minting budget and a full memory store",
        "## The hosted path against its floor",
    ):
        assert section in text
    assert "results identical: **True**" in text
    assert "(identical: **True**;" in text  # the budget adds no Redis command

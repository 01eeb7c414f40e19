"""`dfserve demo` (the README's main job) end to end on a small checkpoint: build, serve, classify, load test,
verify; it exits 0 only when the live server verifies against the reference pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_every_step_and_verifies(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "dfserve.cli", "demo", "--model", str(tiny_checkpoint)),
            *("--out", str(tmp_path), "--loadtest-duration", "4s"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "160"},
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    for step in ("1. build", "2. serve", "3. classify", "4. load test", "5. verify"):
        assert step in out, step
    assert "verified:" in out and "NOT verified" not in out
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("summary: ") and "images/s over HTTP" in last and "load test" in last, last
    assert "verified against the reference pipeline" in last and "dfserve serve --repository" in last
    assert (tmp_path / "repository" / "build_report.json").is_file()

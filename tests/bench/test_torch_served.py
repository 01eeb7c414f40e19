"""The prepared GPU script for the torch engine served through Triton, run end to end on the CPU: a tiny
checkpoint, built with `--engine torch`, served by the real tritonserver (nvidia-pytriton's), measured at two
concurrencies against the engine alone. On the CPU it must refuse FP16 and label every row with what ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_torch_served_script_runs_end_to_end_on_the_cpu(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["--model", str(tiny_checkpoint), "--device", "cpu", "--out", str(out), "--max-batch", "4"]
    args += ["--concurrency", "1,3", "--seconds", "2", "--budget-s", "240"]
    done = subprocess.run(
        [sys.executable, "-m", "dfserve.bench.torch_served", *args], capture_output=True, text=True, timeout=420
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((out / "torch_served.json").read_text())
    assert result["precision"] == "fp32"  # never `half` on a CPU
    assert result["labels"]["engine"] == "PyTorch eager (in-process) fp32, cpu (CPU), weights as built"
    assert result["labels"]["served"].startswith("served `vit` (torch engine, Triton Python backend) fp32, cpu")
    assert [p["batch"] for p in result["engine"]] == [1, 4] and all(p["images_per_s"] > 0 for p in result["engine"])
    assert [p["concurrency"] for p in result["served"]] == [1, 3]
    assert all(p["requests"] > 0 and p["errors"] == [] and p["latency_p99_ms"] for p in result["served"])
    assert result["served_over_engine"] > 0 and result["flags"] == []
    table = (out / "torch_served.md").read_text()
    assert "| concurrency | images/s |" in table and "Best served / engine at max batch" in table
    report = json.loads((out / "repository" / "build_report.json").read_text())
    assert report["engine"] == "torch" and report["precision"] == "fp32"

"""`dfserve bench gpu-decode` end to end on the CPU (`--device cpu`, a tiny checkpoint): both builds, both served
detectors loaded with real photographs, the engine alone and the decoder alone, the ratio and the decode drift in
gpu_decode.json and gpu_decode.md. On a GPU host the same script gives the figures that matter (docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkpoints import make_checkpoint

pytestmark = pytest.mark.slow


def test_gpu_decode_bench_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ck", labels="one", policy="shortest_edge", head_scale=20)
    out = tmp_path / "bench"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "dfserve.bench.gpu_decode", "--device", "cpu", "--model", str(ckpt)),
            *("--out", str(out), "--budget-s", "40", "--sizes", "shipped,1mp", "--photos-per-size", "3"),
            *("--max-batch", "4", "--concurrency", "2", "--files-per-request", "2", "--preprocess-instances", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((out / "gpu_decode.json").read_text())
    sections = result["sections"]
    assert set(sections) == {"engine", "decode", "served_cpu", "served_gpu"}
    assert not [name for name, body in sections.items() if "error" in body]
    assert sections["engine"]["images_per_s"] > 0 and sections["engine"]["batch"] == 4
    for name in ("decode", "served_cpu", "served_gpu"):
        sizes = sections[name]["sizes"]
        assert set(sizes) == {"shipped", "1mp"} and all(v["images_per_s"] > 0 for v in sizes.values()), name
    assert all(v["errors"] == 0 for v in sections["served_gpu"]["sizes"].values())
    drift = sections["served_gpu"]["drift"]
    assert drift["device"] == "cpu" and drift["max_abs_diff"] <= 1e-2 and drift["flips"] == 0
    assert set(result["ratios"]["served_gpu"]) == {"shipped", "1mp"}
    md = (out / "gpu_decode.md").read_text()
    assert "gpu / engine (goal ≥ 0.8)" in md and "Decode drift" in md and "measured on cpu" in md

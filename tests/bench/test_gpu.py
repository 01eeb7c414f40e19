"""The GPU measurement script end to end on the CPU (`--device cpu`): every section runs or says why it was
skipped, the drift goes through the shared fidelity comparison, and the budget holds."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dfserve.spec.model import Preprocessing
from tests.checkpoints import make_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "one", labels="one", policy="shortest_edge")
    out = tmp_path_factory.mktemp("gpu-bench")
    run = subprocess.run(
        [
            *(sys.executable, "-m", "dfserve.bench.gpu", "--device", "cpu", "--model", str(ckpt), "--out", str(out)),
            *("--budget-s", "30", "--images", "4", "--jpeg-side", "160"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads((out / "gpu_bench.json").read_text())
    data["_markdown"] = (out / "gpu_bench.md").read_text()
    return data


def test_every_section_ran_or_says_why_not(result: dict) -> None:
    sections = result["sections"]
    assert list(sections) == ["ceiling", "drift", "preprocessing", "gpu_decode", "served"]
    assert not [name for name, body in sections.items() if "error" in body]
    assert [p["batch"] for p in sections["ceiling"]["eager"]][:3] == [1, 2, 4]
    ceiling = sections["ceiling"]
    assert ceiling["precision"] == "fp32" and ceiling["labels"]["eager"].startswith("PyTorch eager fp32, cpu, ")
    assert "PyTorch, not TensorRT" in result["_markdown"]
    assert all(p["images_per_s"] > 0 for p in sections["ceiling"]["eager"])
    assert set(sections["preprocessing"]["modes"]) == {"exact", "box", "draft"}
    for section in ("gpu_decode", "served"):
        body = sections[section]
        assert "skipped" in body or body.get("decode"), body
    assert result["elapsed_s"] < 30 + 40  # the budget, plus set-up that no section owns


def test_drift_compares_against_the_cpu_fp32_reference(result: dict) -> None:
    drift = result["sections"]["drift"]
    assert drift["images"] >= 20  # the build's parity set
    low, high = drift["reference_score_range"]
    assert high - low > 0.1  # the scaled head spreads the scores: drift is visible
    assert list(drift["candidates"]) == ["cpu fp32"]  # FP16 is measured on CUDA only, never silently on a CPU
    fp32 = drift["candidates"]["cpu fp32"]
    assert fp32["max_abs_diff"] == 0.0 and fp32["flips"] == 0
    assert "## 2. Drift against CPU FP32" in result["_markdown"]


def test_gpu_resize_and_crop_follows_exact_preprocessing() -> None:
    """The GPU path's resize and crop, run on the CPU tensor backend, against dfserve's exact mode."""
    torch = pytest.importorskip("torch")
    from PIL import Image

    from dfserve.bench.gpu import gpu_resize_and_crop
    from dfserve.preprocessing import resize_and_crop

    pp = Preprocessing(resize="shortest_edge", size=40, crop=(32, 32), resample=3)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:90, 0:120]
    arr = np.clip(np.stack([xx * 2, yy * 2, xx + yy], -1) + rng.normal(0, 8, (90, 120, 3)), 0, 255).astype(np.uint8)
    exact = resize_and_crop(Image.fromarray(arr), pp, "exact")
    gpu = gpu_resize_and_crop(torch.from_numpy(arr).permute(2, 0, 1)[None], pp)[0].numpy()
    assert gpu.shape == exact.shape == (3, 32, 32)
    assert np.abs(gpu.astype(int) - exact.astype(int)).max() <= 3  # torch's antialias follows Pillow's filters

"""`dfserve bench` smoke test on the tiny checkpoint: every section runs for real and produces numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from dfserve.bench.run import BenchOptions, run_bench

pytestmark = pytest.mark.slow


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_bench_smoke(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = run_bench(
        BenchOptions(
            model=str(tiny_checkpoint),
            max_batch=2,
            repeats=1,
            image_count=2,
            memory_batches=(1, 2),
            parity_photos=2,
            out=tmp_path / "bench",
        )
    )
    data = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [r["batch"] for r in data["raw"]["rows"]] == [1, 2]
    assert all(positive(r["images_per_s"]) and positive(r["cpu_s_per_image"]) for r in data["raw"]["rows"])
    assert positive(data["raw"]["recheck"]["images_per_s"])
    assert [r["concurrency"] for r in data["served"]["vit"]["rows"]] == [1, 2, 4]
    assert all(positive(r["images_per_s"]) for r in data["served"]["vit"]["rows"])
    # CPU clocks tick in 10 ms: a tiny model's few requests may legitimately read 0
    assert all(r["server_cpu_s_per_image"] >= 0 for r in data["served"]["vit"]["rows"])
    assert all(positive(r["images_per_s"]) for r in data["served"]["detector"]["rows"])
    methods = data["preprocessing"]["methods"]
    assert set(methods) == {"transformers", "exact", "box", "draft"}
    assert all(positive(m["images_per_s"]) for m in methods.values())
    assert methods["exact"]["max_pixel_diff"] == 0 and methods["exact"]["identical"]
    assert methods["box"]["max_pixel_diff"] <= 1
    assert methods["box"]["max_score_diff"] < 1e-4
    assert 0 <= methods["draft"]["top1_changed"] <= methods["draft"]["images_scored"] == 2
    vit_stats = data["served"]["vit"]["triton"]["vit"]
    assert vit_stats["requests"] == 1 + 2 + 4 and all(
        positive(vit_stats[f"{p}_ms"]) for p in ("compute_input", "compute_infer", "compute_output")
    )
    assert vit_stats["queue_ms"] is not None
    assert set(data["served"]["detector"]["triton"]) == {"detector", "preprocess", "vit"}
    assert [m["max_batch"] for m in data["memory"]] == [1, 2]
    assert all(positive(m["idle_bytes"]) and m["load_bytes"] >= m["idle_bytes"] for m in data["memory"])
    assert 1.0 <= data["memory"][1]["avg_batch"] <= 2.0  # how full a batch gets depends on timing
    assert all(m["processes"] >= 3 for m in data["memory"])  # tritonserver and its Python stubs
    assert positive(data["ratios"]["served_over_raw"]) and positive(data["ratios"]["box_over_reference"])
    assert "served / raw" in result.markdown and "| box |" in result.markdown
    with Image.open(result.files["png"]) as png:
        assert png.format == "PNG"

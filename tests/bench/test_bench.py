"""`dfserve bench` smoke test on the tiny checkpoint: every variant runs for real (the Transformers pipeline, ONNX
Runtime FP32 and INT8, two real tritonservers), and the ratios and goals are the measured numbers' own."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from dfserve.bench.report import render_markdown
from dfserve.bench.run import BenchOptions, ratios_and_goals, run_bench, served_over_raw
from dfserve.engine.cpu import read_host

pytestmark = pytest.mark.slow

VARIANTS = {"pipeline", "raw_fp32", "raw_int8", "vit_fp32", "vit_int8", "detector_fp32", "detector_int8"}


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_bench_smoke(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = run_bench(
        BenchOptions(
            model=str(tiny_checkpoint),
            concurrency=(1, 2),
            seconds=0.3,
            rounds=2,
            pipeline_batch=2,
            memory_batches=(1, 2),
            repeats=1,
            image_count=2,
            parity_photos=2,
            out=tmp_path / "bench",
        )
    )
    data = json.loads((tmp_path / "bench" / "bench.json").read_text())
    variants = data["variants"]
    assert set(variants) == VARIANTS
    for name, v in variants.items():
        levels = [r["level"] for r in v["rows"]]
        assert levels == [1, 2], name  # the pipeline: batch sizes 1 and pipeline_batch
        for row in v["rows"]:
            assert len(row["rounds"]) == 2, name  # one window per round: the rounds alternated
            assert positive(row["images_per_s"]) and positive(row["p50_ms"]) and row["p99_ms"] >= row["p50_ms"]
            assert row["cpu_s_per_image"] >= 0  # CPU clocks tick in 10 ms: a tiny model may read 0
        assert v["memory_bytes"] >= 0
    assert variants["vit_fp32"]["memory_bytes"] > 0 and variants["detector_int8"]["memory_bytes"] > 0
    assert data["model"]["batching"]["fp32"]["preferred_batch_sizes"] == []

    # ratios and goals come from the measured figures: recomputing them from the saved summaries agrees
    int8_instructions = bool(read_host().accelerates("int8"))
    ratios, goals = ratios_and_goals(variants, int8_instructions=int8_instructions)
    assert json.loads(json.dumps(ratios)) == data["ratios"]
    assert [g["goal"] for g in goals] == [g["goal"] for g in data["goals"]]
    pipe = variants["pipeline"]["best_images_per_s"]
    det8, det32 = variants["detector_int8"]["best_images_per_s"], variants["detector_fp32"]["best_images_per_s"]
    assert data["ratios"]["over_pipeline"]["detector_int8"] == pytest.approx(det8 / pipe)
    assert data["ratios"]["over_raw"]["vit_int8"] == pytest.approx(
        variants["vit_int8"]["best_images_per_s"] / variants["raw_int8"]["best_images_per_s"]
    )
    first = data["goals"][0]
    assert first["value"] == pytest.approx(det8 / det32)
    assert first["met"] == ((det8 / det32 >= 1.5) if int8_instructions else None)  # without VNNI/AMX: reported
    assert data["machine"]["cpu"]["model"] == read_host().model
    _, avx2_goals = ratios_and_goals(variants, int8_instructions=False)
    assert avx2_goals[0]["target"] is None and "auto serves FP32" in avx2_goals[0]["goal"]
    raw = {r["level"]: r["images_per_s"] for r in variants["raw_fp32"]["rows"]}
    vit = {r["level"]: r["images_per_s"] for r in variants["vit_fp32"]["rows"]}
    assert data["ratios"]["vit_over_raw_by_concurrency"]["fp32"]["2"] == pytest.approx(vit[2] / max(raw[1], raw[2]))
    assert all(g["met"] in (True, False) for g in data["goals"] if g["target"] is not None)

    assert [(m["precision"], m["max_batch"]) for m in data["memory"]] == [
        ("fp32", 1),
        ("fp32", 2),
        ("int8", 1),
        ("int8", 2),
    ]
    assert all(positive(m["idle_bytes"]) and m["load_bytes"] >= m["idle_bytes"] for m in data["memory"])
    assert set(data["triton"]) == {"fp32", "int8"} and all(
        s["vit"]["requests"] > 0 and s["preprocess"]["requests"] > 0 for s in data["triton"].values()
    )
    assert set(data["preprocessing"]["methods"]) == {"transformers", "exact", "box", "draft"}
    assert render_markdown(data) == result.markdown  # the saved JSON re-renders the same report
    assert "## Goals" in result.markdown and ("NOT MET" in result.markdown or "| met |" in result.markdown)
    # two rounds of 0.3 s: the report says its figures are rough rather than printing them as if they were not
    assert "**Caution:** 2 round(s) of 0.3 s" in result.markdown
    assert "rests on fewer than 100 latencies" in result.markdown
    with Image.open(result.files["png"]) as png:
        assert png.format == "PNG" and png.size[0] > 600


def test_served_over_raw_takes_the_best_batch_up_to_the_concurrency() -> None:
    raw = {1: 10.0, 2: 12.0, 4: 8.0}
    assert served_over_raw({1: 9.5, 2: 11.4, 4: 12.0}, raw) == {
        1: pytest.approx(0.95),
        2: pytest.approx(0.95),
        4: pytest.approx(1.0),  # batch 4 is slower than batch 2: the best up to 4 is still 12
    }

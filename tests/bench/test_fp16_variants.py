"""The measurement behind FP16_KEEP_FP32_OPS, on a small sensitive checkpoint: every variant is measured against
the pipeline, only the built one and 'everything FP16' feed no attention Softmax FP32, and the built one passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfserve.bench.fp16_variants import measure
from tests.checkpoints import make_checkpoint

pytestmark = pytest.mark.slow


def test_fp16_variants_are_measured_against_the_pipeline(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt", labels="five", head_scale=50)
    result = measure(str(ckpt), photos=2)
    rows = list(result["variants"].values())
    assert [r["attention_softmax_fed_fp32"] for r in rows] == [2, 0, 0]  # the tiny ViT has two attention blocks
    built = rows[1]
    assert built["keep_fp32"] == ["LayerNormalization"] and built["passes_fp16_bar"]
    assert all(0 < r["vs_reference"]["max_abs_diff"] < 1e-2 for r in rows)

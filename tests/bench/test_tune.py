"""`python -m dfserve.bench.tune` on the tiny build: every candidate is served by a real tritonserver with its own
settings, and the ratios are the measured figures' own."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfserve.bench.tune import parse_candidate, render, run
from dfserve.errors import BenchError
from dfserve.spec.model import Batching


def test_candidates_parse_over_the_base_without_preferred_sizes() -> None:
    base = Batching(max_batch_size=8, preferred_batch_sizes=(4, 8))
    b = parse_candidate("mb=2,delay=100,engine=2,threads=1,pre=3", base)
    assert (b.max_batch_size, b.max_queue_delay_us, b.engine_instances, b.engine_threads, b.preprocess_instances) == (
        2,
        100,
        2,
        1,
        3,
    )
    assert b.preferred_batch_sizes == () and b.preprocess_max_batch_size == 2
    with pytest.raises(BenchError, match="expected key=integer"):
        parse_candidate("batch=2", base)


@pytest.mark.slow
def test_tune_smoke(built_repo: Path) -> None:
    result = run(built_repo, ["mb=1", "mb=2,delay=1000,engine=2,threads=1"], levels=(1, 2), seconds=0.2, rounds=2)
    assert set(result["raw_images_per_s"]) == {1, 2}
    for name, cand in result["candidates"].items():
        for c, point in cand["vit"].items():
            reference = max(v for b, v in result["raw_images_per_s"].items() if b <= c)
            assert point["served_over_raw"] == pytest.approx(point["images_per_s"] / reference), name
        assert cand["worst_served_over_raw"] == min(p["served_over_raw"] for p in cand["vit"].values())
        assert cand["meets_goal"] == (cand["worst_served_over_raw"] >= 0.95)
    assert "engine=2,threads=1" in render(result)
    # the CPU it ran on, and the one the repository was built and measured on (the spec's record)
    assert result["host"]["cpu_model"] in render(result).splitlines()[0]
    assert result["build_host"] is not None and result["build_host"]["cpu_model"] == result["host"]["cpu_model"]

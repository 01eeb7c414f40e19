"""soak.md and soak.png from given windows: a rate per hour only from a span long enough to extrapolate, and a
plot with throughput in it. The real soak (tests/soak/test_soak.py) writes the same files from a real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dfserve.measure.closedloop import Outcome
from dfserve.measure.processes import ProcessMemory, TreeMemory
from dfserve.soak.drift import MIN_EXTRAPOLATION_S
from dfserve.soak.report import markdown, write_outputs
from dfserve.soak.run import SoakResult
from dfserve.soak.windows import judge, make_window, totals

MIB = 2**20


def _result(window_s: float, count: int, leak_mib_per_window: float) -> SoakResult:
    rng = np.random.default_rng(0)
    windows = []
    outcomes_all: list[Outcome] = []
    for i in range(count):
        latencies = rng.gamma(4.0, 0.02, size=40 + int(rng.integers(0, 20)))
        outcomes = [Outcome(0.0, float(s)) for s in latencies]
        outcomes_all += outcomes
        rss = int((900 + i * leak_mib_per_window + rng.normal(0, 0.3)) * MIB)
        shm = {"triton_python_backend_shm_region_1": 64 * MIB}
        memory = [TreeMemory(alive=True, processes=(ProcessMemory(1, "tritonserver", rss),), shm_regions=shm)]
        windows.append(make_window(i, i * window_s, (i + 1) * window_s, i == 0, outcomes, 0, memory))
    total = totals(windows, outcomes_all, len(outcomes_all), 0, count * window_s)
    return SoakResult(
        options={"warmup_s": window_s, "max_growth_pct": 5.0, "window_s": window_s, "timeout_s": 30.0},
        target={
            "protocol": "http",
            "url": "http://127.0.0.1:8000",
            "model": "deepfake",
            "mode": "file",
            "own_server": True,
            "pid": 1,
            "payloads": ["a.jpg", "b.jpg"],
        },
        concurrency=4,
        ramp=[],
        knee=None,
        ramp_accounting=None,
        windows=windows,
        totals=total,
        verdict=judge(windows, total, 5.0, memory_measured=True),
        memory_start=None,
        memory_end=None,
    )


def test_a_short_soak_states_the_change_over_its_span_not_a_rate_per_hour(tmp_path: Path) -> None:
    result = _result(10.0, 6, -0.5)  # 40 s after the warm-up
    growth = result.verdict.memory_growth
    assert growth is not None and growth.span_s == 40.0 and growth.slope_per_hour is None
    md = markdown(result)
    row = next(line for line in md.splitlines() if line.startswith("| RSS"))
    assert "over 40 s (under 10 min: too short to say per hour)" in row and "per hour |" not in row
    assert "**Caution:** the p99 of 5 of 5 windows after the warm-up rests on fewer than 100 requests" in md
    write_outputs(result, tmp_path)
    with Image.open(tmp_path / "soak.png") as png:
        assert png.format == "PNG" and png.height > png.width  # four panels, one above the other


def test_a_long_soak_states_its_rate_per_hour(tmp_path: Path) -> None:
    result = _result(60.0, 13, 1.0)  # 11 minutes after the warm-up, 1 MiB a minute
    growth = result.verdict.memory_growth
    assert growth is not None and growth.span_s >= MIN_EXTRAPOLATION_S
    assert growth.slope_per_hour is not None and abs(growth.slope_per_hour / MIB - 60) < 10
    row = next(line for line in markdown(result).splitlines() if line.startswith("| RSS"))
    assert row.rstrip(" |").endswith("per hour") and "too short" not in row
    write_outputs(result, tmp_path)
    assert (tmp_path / "soak.png").stat().st_size > 10_000

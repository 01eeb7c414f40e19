"""The INT8 choice measurement on a real build: both quantizations run, drift and speed figures come out."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfserve.bench.int8 import main, run


@pytest.mark.slow
def test_int8_bench_prints_drift_and_speed(built_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(built_repo, seconds=0.05, rounds=1, threads=1)
    for name in ("int8_dynamic", "int8_static_qdq"):
        assert 0 <= result["drift_vs_fp32"][name]["batch1"]["max_abs_diff"] < 0.5
        for batch in ("batch1", "batch8"):
            assert result["images_per_s"][batch][name] > 0
    assert main([str(built_repo), "--seconds", "0.05", "--rounds", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "INT8 instructions:" in lines[0] and result["host"]["cpu_model"] in lines[0]  # the CPU measured on
    assert [line.split()[0] for line in lines[2:]] == ["fp32", "int8_dynamic", "int8_static_qdq"]

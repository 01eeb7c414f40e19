"""Reduced-precision builds timed against FP32 on the build host, recorded with the CPU's model and instruction
sets (build_report.json and the spec's `build_host`), the one-line summary when a precision buys nothing here,
and `--precision auto` picking from the measurement. Real builds of tiny checkpoints, real ONNX Runtime; the
measurement is bounded by `speed_seconds`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from dfserve.engine.cpu import HostCpu, read_host
from dfserve.export import hostspeed, pipeline
from dfserve.export.pipeline import BuildOptions, BuildResult, build
from dfserve.repository.configs import read_config, spec_from_config
from dfserve.spec.model import ModelSpec
from tests.checkpoints import make_checkpoint

pytestmark = pytest.mark.slow

SECONDS = 0.05


def build_at(tmp: Path, precision: str, **options: Any) -> tuple[BuildResult, str]:
    folder = make_checkpoint(tmp / "ckpt", labels="one", policy="shortest_edge", head_scale=30.0)
    out = io.StringIO()
    result = build(
        BuildOptions(
            out=tmp / "repo",
            model=str(folder),
            precision=precision,  # type: ignore[arg-type]
            speed_seconds=SECONDS,
            parity_photos=4,
            **options,
        ),
        console=Console(file=out, width=400),
    )
    return result, out.getvalue()


def test_int8_build_records_its_speed_and_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostspeed, "MIN_SPEEDUP", 1e6)  # whatever this CPU measures, INT8 "buys nothing" here
    result, printed = build_at(tmp_path, "int8")
    host = read_host()
    report = json.loads((result.out_dir / "build_report.json").read_text())
    assert report["host"]["cpu_model"] == host.model and report["host"]["isa"] == sorted(host.isa)
    speed = report["precision"]["speed"]
    assert speed["batches"] == [1] and speed["seconds"] == SECONDS
    fp32, int8 = speed["images_per_s"]["fp32"]["1"], speed["images_per_s"]["int8"]["1"]
    assert fp32 > 0 and int8 > 0 and speed["over_fp32"]["int8"]["1"] == pytest.approx(int8 / fp32, rel=1e-2)
    assert report["timings_s"]["speed"] < 30  # bounded: 2 graphs x 2 rounds x SECONDS, plus sessions and warm-up
    assert "INT8 buys no speed on this CPU" in printed and report["precision"]["no_gain"].startswith("INT8 buys")
    # the served spec carries the compact record, in dfserve.json and in the configs Triton serves
    for spec in (ModelSpec.load(result.out_dir), spec_from_config(read_config(result.out_dir / "vit"))):
        assert spec.build_host is not None and spec.build_host.cpu_model == host.model
        assert spec.build_host.measured == {"int8_over_fp32": speed["over_fp32"]["int8"]["1"]}


def test_a_gain_prints_no_warning_and_fp32_builds_record_the_cpu_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostspeed, "MIN_SPEEDUP", 0.0)
    result, printed = build_at(tmp_path / "int8", "int8", batching=None)
    assert "buys no speed" not in printed and "no_gain" not in result.report["precision"]
    fp32, _ = build_at(tmp_path / "fp32", "fp32")
    assert "speed" not in fp32.report["precision"] and fp32.spec.build_host is not None
    assert fp32.spec.build_host.measured == {}


def test_auto_serves_int8_where_it_is_measured_faster_with_vnni(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vnni = HostCpu("a VNNI CPU", "x86_64", frozenset({"avx2", "fma", "avx512f", "avx512_vnni"}), 2, 2)
    monkeypatch.setattr(pipeline, "read_host", lambda: vnni)  # this host's figures, claimed for a VNNI CPU
    monkeypatch.setattr(hostspeed, "MIN_SPEEDUP", 0.0)  # a tiny graph's INT8 is not faster: any measured gain
    result, printed = build_at(tmp_path, "auto")
    assert result.spec.precision == "int8" and ModelSpec.load(result.out_dir).precision == "int8"
    assert "--precision auto serves INT8:" in printed and "AVX-512 VNNI" in printed
    assert result.report["precision"]["auto"]["chosen"] == "int8"
    assert result.spec.build_host is not None and "int8_over_fp32" in result.spec.build_host.measured


def test_auto_serves_fp32_on_a_cpu_without_vnni_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    avx2 = HostCpu("AMD EPYC 7B12", "x86_64", frozenset({"avx2", "fma"}), 2, 2)
    monkeypatch.setattr(pipeline, "read_host", lambda: avx2)
    monkeypatch.setattr(hostspeed, "MIN_SPEEDUP", 0.0)  # even a measured gain is not taken without the instructions
    result, printed = build_at(tmp_path, "auto")
    assert result.spec.precision == "fp32"
    onnx = result.out_dir / "vit" / "1" / "model.onnx"
    assert "MatMulInteger" not in onnx.read_bytes().decode("latin-1")  # the FP32 graph is what is served
    reason = result.report["precision"]["auto"]["reason"]
    assert reason.startswith("FP32: this CPU (AMD EPYC 7B12) has no INT8 instructions") and reason in printed
    assert result.report["precision"]["speed"]["over_fp32"]["int8"]["1"] > 0  # measured all the same


def test_auto_is_refused_where_it_has_no_meaning(tmp_path: Path) -> None:
    from dfserve.errors import BuildError

    with pytest.raises(BuildError, match="--precision auto is for ONNX Runtime on CPUs"):
        build(BuildOptions(out=tmp_path, precision="auto", engine="torch"), console=Console(file=io.StringIO()))


def test_a_negative_speed_window_is_refused_in_one_line(tmp_path: Path) -> None:
    from dfserve.errors import BuildError

    with pytest.raises(BuildError, match="--speed-seconds >= 0"):
        build(BuildOptions(out=tmp_path, speed_seconds=-1), console=Console(file=io.StringIO()))

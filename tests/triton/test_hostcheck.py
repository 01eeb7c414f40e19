"""`dfserve serve` against the CPU a repository was measured on: a real INT8 build of a tiny checkpoint whose
dfserve.json is given the record of another CPU (an ARM Graviton: this x86 host has every x86 INT8 instruction,
so only another architecture is a CPU it lacks), served by the real `dfserve serve`; the served configs expose
this build's own record to clients."""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path

import pytest
from rich.console import Console

from dfserve.engine.cpu import read_host
from dfserve.export.pipeline import BuildOptions, build
from dfserve.spec.model import BuildHost, ModelSpec, spec_from_model_config
from tests.checkpoints import make_checkpoint
from tests.triton.test_server import _no_leftover_cli, http, start_cli

__all__ = ["_no_leftover_cli"]  # the fixture that stops a `dfserve serve` left by a failing test

pytestmark = pytest.mark.slow

GRAVITON = BuildHost(
    cpu_model="AWS Graviton3 (test record)",
    arch="aarch64",
    isa=("asimd", "asimddp", "bf16", "i8mm", "sve"),
    cores=2,
    measured={"int8_over_fp32": 1.7},
)


def test_serve_warns_in_one_line_when_the_cpu_lacks_what_int8_was_measured_with(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", labels="one", policy="shortest_edge", head_scale=30.0)
    result = build(
        BuildOptions(out=tmp_path / "repo", model=str(folder), precision="int8", speed_seconds=0.05, parity_photos=4),
        console=Console(file=io.StringIO()),
    )
    ours = result.spec.build_host
    assert ours is not None and ours.cpu_model == read_host().model
    # this build's own CPU: nothing to say
    proc, info, lines = start_cli(f"--repository={result.out_dir}")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert not [line for line in lines if "warning:" in line and "measured" in line]
    # the record of another CPU kind
    data = json.loads((result.out_dir / "dfserve.json").read_text())
    data["build_host"] = GRAVITON.model_dump(mode="json")
    (result.out_dir / "dfserve.json").write_text(json.dumps(data))
    proc, info, lines = start_cli(f"--repository={result.out_dir}")
    try:
        warned = [line for line in lines if line.startswith("warning:")]
        assert len(warned) == 1, lines
        assert "AWS Graviton3 (test record)" in warned[0] and "INT8 1.70x FP32 there)" in warned[0]
        assert "aarch64" in warned[0] and "--precision auto" in warned[0]
        # the served spec exposes the build's record (what `dfserve bench` and the SDK read)
        status, body = http(f"http://{info['http']}/v2/models/{result.spec.models.ensemble}/config")
        served = spec_from_model_config(json.loads(body))
        assert status == 200 and isinstance(served, ModelSpec) and served.build_host == ours
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0

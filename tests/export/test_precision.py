"""FP16 and INT8 graphs for the ONNX Runtime targets: built from the checkpoint, held to their bars against the
Transformers pipeline at every build (failing closed), their FP32 parts intact, and served through the real
ensemble with the scores the graph gives at build time."""

from __future__ import annotations

import collections
import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from rich.console import Console

from dfserve.client import Client
from dfserve.errors import ParityError
from dfserve.export import policy as config
from dfserve.export.onnx_graph import POST, PRE
from dfserve.export.parity import onnx_scores, parity_pixels
from dfserve.export.pipeline import BuildOptions, BuildResult, build
from dfserve.spec.model import ModelSpec
from dfserve.triton.process import TritonServer
from tests.checkpoints import make_checkpoint
from tests.conftest import TEST_BATCHING

pytestmark = pytest.mark.slow

QUIET = Console(file=io.StringIO())


def build_at(tmp: Path, precision: str, **ckpt: Any) -> BuildResult:
    folder = make_checkpoint(tmp / "ckpt", **ckpt)
    options = BuildOptions(
        out=tmp / "repo",
        model=str(folder),
        precision=precision,  # type: ignore[arg-type]
        batching=TEST_BATCHING,
        speed_seconds=0.05,
    )
    return build(options, console=QUIET)


def served_graph(result: BuildResult) -> onnx.ModelProto:
    return onnx.load(str(result.out_dir / result.spec.models.engine / "1" / "model.onnx"))


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize(
    "ckpt", [{"labels": "one", "policy": "shortest_edge", "head_scale": 30.0}, {"labels": "five", "policy": "fixed"}]
)
def test_reduced_precision_builds_pass_their_gate_and_report_it(
    tmp_path: Path, precision: str, ckpt: dict[str, Any]
) -> None:
    result = build_at(tmp_path, precision, **ckpt)
    assert result.spec.precision == precision and ModelSpec.load(result.out_dir).precision == precision
    report = result.report["precision"]
    bar = config.FIDELITY_BARS[precision]
    assert report["served"] == precision and report["bar"]["max_abs_diff"] == bar.max_abs_diff
    assert 0 < report["vs_reference"]["max_abs_diff"] <= bar.max_abs_diff
    assert report["vs_reference"]["agreement"] >= bar.min_agreement
    assert report["vs_fp32"]["images"] == result.report["parity"]["images"]
    graph = served_graph(result)
    ops = collections.Counter(n.op_type for n in graph.graph.node)
    if precision == "fp16":
        assert sum(1 for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16) > 0
    else:
        assert ops["MatMulInteger"] + ops["DynamicQuantizeLinear"] > 0
    ours = [n for n in graph.graph.node if n.name.startswith((PRE, POST))]
    assert {n.op_type for n in ours} >= {"Cast", "Sub", "Div"}  # the input and scoring parts are untouched
    assert [(o.domain, o.version) for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [("", 18)]


def test_the_gate_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(config.FIDELITY_BARS, "int8", config.FidelityBar(max_abs_diff=1e-9, min_agreement=1.0))
    with pytest.raises(ParityError, match=r"the INT8 graph is too far from the Transformers pipeline: max"):
        build_at(tmp_path, "int8", labels="one", policy="shortest_edge", head_scale=30.0)


def test_fp32_graph_is_clean(tmp_path: Path) -> None:
    result = build_at(tmp_path, "fp32", labels="two", policy="fixed")
    graph = served_graph(result)
    assert len({(o.domain) for o in graph.opset_import}) == len(graph.opset_import)  # one import per domain
    assert not [n for n in graph.graph.node if n.op_type == "Identity"]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_served_scores_equal_the_graphs_own(tmp_path: Path, sample_images: dict[str, Path], precision: str) -> None:
    result = build_at(tmp_path, precision, labels="one", policy="shortest_edge", head_scale=30.0)
    paths = list(sample_images.values())
    graph, pixels = result.out_dir / "vit" / "1" / "model.onnx", parity_pixels(result.spec, paths)
    # one image at a time on both sides: dynamic INT8 takes its activation scales per batch, so a score depends
    # (by ~1e-3) on its batch-mates; the server is then sent one request at a time
    expected = np.concatenate([onnx_scores(graph, result.spec, pixels[i : i + 1]) for i in range(len(paths))])
    with (
        TritonServer(result.out_dir, http_port=0, grpc_port=0, metrics_port=0) as server,
        Client(server.http_url) as client,
    ):
        predictions = client.classify_many(paths, concurrency=1, raise_on_error=True)
    names = result.spec.labels.names
    got = np.array([[p.scores[n] for n in names] for p in predictions])  # type: ignore[union-attr]
    assert np.abs(got - expected).max() <= 1e-5

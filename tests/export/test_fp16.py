"""The FP16 graph: written by the real converter, run by real ONNX Runtime, gated by the fp16 bar, served."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from dfserve.spec.model import REPORT_FILENAME

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fp16_repo(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dfserve.export.pipeline import BuildOptions, build
    from tests.conftest import TEST_BATCHING

    out = tmp_path_factory.mktemp("fp16") / "repository"
    build(BuildOptions(out=out, model=str(tiny_checkpoint), batching=TEST_BATCHING, parity_photos=4, precision="fp16"))
    return out


def test_fp16_build_reports_its_drift_and_serves_an_fp16_graph(fp16_repo: Path) -> None:
    report = json.loads((fp16_repo / REPORT_FILENAME).read_text())
    assert report["precision"]["served"] == "fp16"
    fp16 = report["precision"]
    for side in ("vs_fp32", "vs_reference"):
        assert fp16[side]["max_abs_diff"] <= 1e-2
        assert fp16[side]["agreement"] >= 0.995
    graphs = list(fp16_repo.glob("*/1/*.onnx"))
    assert graphs
    model = onnx.load(str(graphs[0]))
    types = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types
    # io types are kept: uint8 pixels in, FP32 scores out
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # LayerNormalization runs in FP32 (fed by a Cast to FLOAT); attention is FP16 end to end
    produced_by = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":
            src = produced_by[node.input[0]]
            assert src.op_type == "Cast" and src.attribute[0].i == onnx.TensorProto.FLOAT, node.name
    assert_attention_in_fp16(model)


def assert_attention_in_fp16(model: onnx.ModelProto) -> None:
    """Every attention Softmax is fed FP16 by its MatMul and feeds an FP16 MatMul (TensorRT's MHA fusion pattern),
    read with ONNX shape inference, independently of `dfserve.export.precision.softmax_fed_fp32`."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    produced_by = {o: n for n in model.graph.node for o in n.output}
    consumers = {i: n for n in model.graph.node for i in n.input}
    attention = [n for n in model.graph.node if n.op_type == "Softmax" and not n.name.startswith("dfserve_post_")]
    assert attention, "no attention Softmax found"
    for node in attention:
        assert types[node.input[0]] == onnx.TensorProto.FLOAT16, node.name
        assert produced_by[node.input[0]].op_type == "MatMul", node.name
        assert consumers[node.output[0]].op_type == "MatMul" and types[node.output[0]] == onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def sensitive_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.checkpoints import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("sensitive") / "five", labels="five", head_scale=50)


def test_fp16_attention_graph_passes_the_bar_on_a_sensitive_head(sensitive_checkpoint: Path, tmp_path: Path) -> None:
    """`dfserve build --precision fp16` on a five-class head scaled ×50 (scores spread over (0, 1), every rounding
    shows): no Softmax fed FP32, within the FP16 bar against the pipeline and the FP32 graph."""
    from dfserve.cli import main

    out = tmp_path / "repository"
    args = ["build", "--model", str(sensitive_checkpoint), "--precision", "fp16", "--parity-photos", "4"]
    assert main([*args, "--out", str(out)]) == 0
    report = json.loads((out / REPORT_FILENAME).read_text())["precision"]
    assert report["vs_reference"]["max_abs_diff"] <= report["bar"]["max_abs_diff"] == 1e-2
    assert report["vs_reference"]["flips"] == 0 and report["vs_fp32"]["max_abs_diff"] <= 1e-2
    assert report["vs_reference"]["max_abs_diff"] > 1e-6  # the head is sensitive enough for FP16 to show
    assert_attention_in_fp16(onnx.load(str(next(out.glob("vit/1/*.onnx")))))


def test_served_fp16_scores_equal_build_time_scores(fp16_repo: Path, tmp_path: Path) -> None:
    """The FP16 graph served through the ensemble by a real tritonserver (ONNX Runtime in the Python backend)
    scores the parity images as it did at build time."""
    import tritonclient.http as httpclient

    from dfserve.export.parity import onnx_scores, parity_pixels, write_parity_images
    from dfserve.spec.model import ModelSpec
    from dfserve.triton.process import TritonServer

    spec = ModelSpec.load(fp16_repo)
    images = write_parity_images(tmp_path / "parity", photos=4, seed=0)
    built = onnx_scores(next(fp16_repo.glob("vit/1/*.onnx")), spec, parity_pixels(spec, images, spec.resize_mode))
    assert len(images) == len(built)
    server = TritonServer(fp16_repo, http_port=0, grpc_port=0, metrics_port=0)
    server.start(timeout=240)
    try:
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=120)
        served = []
        for path in images:
            inp = httpclient.InferInput("image", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[path.read_bytes()]], dtype=object))
            served.append(client.infer("detector", [inp]).as_numpy("scores")[0])
    finally:
        server.stop()
    np.testing.assert_allclose(np.array(served, dtype=np.float64), built, atol=1e-6)

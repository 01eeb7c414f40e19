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
    # LayerNormalization and Softmax run in FP32: each is fed by a Cast to FLOAT
    produced_by = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            src = produced_by[node.input[0]]
            assert src.op_type == "Cast" and src.attribute[0].i == onnx.TensorProto.FLOAT, node.name


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

"""Fused attention: the FP16 graph feeds no Softmax FP32, the engine record says whether TensorRT fused attention
(read from recorded inspector output and from the TensorRT stand-in), and an unfused FP16 engine fails the build
unless `--allow-unfused-attention`.

TensorRT cannot run here: the inspector samples in tests/export/data are written in TensorRT 10's JSON format with
kernel names from public TensorRT 10 profiles (`_gemm_mha_v2_myl…` fused; separate GEMMs and a `MaxSubExpSumDiv`
softmax kernel unfused); the stand-in fuses MatMul → Softmax → MatMul when all three are FP16, as TensorRT's MHA
fusion does (tests/export/trt_standin.py).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16

from dfserve.engine.records import read_engine_record, record_path
from dfserve.errors import EngineBuildError
from dfserve.export.attention import UNFUSED_FLAG, attention_fusion, attention_sites, check_attention
from dfserve.export.onnx_graph import POST
from dfserve.export.tensorrt import EngineOptions, build_engine
from tests.export.test_tensorrt import CLASSES, make_spec
from tests.export.trt_standin import StandIn

DATA = Path(__file__).with_name("data")


def _layers(name: str) -> list[dict[str, object]]:
    return list(json.loads((DATA / f"engine_information_attention_{name}.json").read_text())["Layers"])


def test_recorded_inspector_output_says_whether_attention_was_fused() -> None:
    fused = attention_fusion(_layers("fused"), sites=2)
    assert fused["status"] == "fused" and fused["fused_layers"] == 2 and fused["unfused_softmax_layers"] == 0
    assert fused["fused_examples"] == ["_gemm_mha_v2_myl0_1", "_gemm_mha_v2_myl0_11"]
    unfused = attention_fusion(_layers("unfused"), sites=2)
    assert unfused["status"] == "unfused" and unfused["fused_layers"] == 0
    assert unfused["unfused_examples"] == ["__myl_MaxSubExpSumDiv_myl0_1", "__myl_MaxSubExpSumDiv_myl0_11"]
    # one block of each: partial; the scoring graph's softmax/sigmoid is never counted as attention
    mixed = attention_fusion(_layers("fused")[:3] + _layers("unfused")[3:], sites=2)
    assert mixed["status"] == "partial"
    assert attention_fusion(_layers("fused"), sites=0)["status"] == "none"
    assert attention_fusion(["_gemm_mha_v2_myl0_1"], sites=1)["status"] == "fused"  # names-only inspector
    assert attention_fusion(["conv1", "fc"], sites=1)["status"] == "unknown"
    assert attention_fusion([], sites=12)["status"] == "unknown"  # the inspector failed


def test_an_unfused_fp16_engine_fails_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    unfused = attention_fusion(_layers("unfused"), sites=2)
    with pytest.raises(EngineBuildError, match=f"attention unfused: 0 fused .* 2 separate softmax.*{UNFUSED_FLAG}"):
        check_attention(unfused, "fp16", allow_unfused=False)
    with caplog.at_level(logging.WARNING):
        check_attention(unfused, "fp16", allow_unfused=True)
    assert "!!! TensorRT left attention unfused" in caplog.text and UNFUSED_FLAG in caplog.text
    check_attention(unfused, "fp32", allow_unfused=False)  # TensorRT fuses FP16/BF16 attention only
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_attention(attention_fusion([], sites=12), "fp16", allow_unfused=False)
    assert "could not tell whether TensorRT fused attention" in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# The stand-in: build_engine on a graph with one attention block


def attention_classifier() -> onnx.ModelProto:
    """uint8 pixels [N,3,8,8] -> 4 tokens of 48 -> one attention block (MatMul → Softmax → MatMul, as Transformers'
    ViT exports it: the scale applied to the query first) -> pooled -> scoring Softmax [N,5] named as dfserve's."""
    rng = np.random.default_rng(3)
    spec = make_spec()
    t, dim = spec.tensors, 16

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.4, size=shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Cast", [t.pixels], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "scale"], ["xs"]),
        helper.make_node("Reshape", ["xs", "tokens_shape"], ["tok"]),
        helper.make_node("MatMul", ["tok", "w_in"], ["h"]),
        helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ["hn"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["hn", "wq"], ["q"]),
        helper.make_node("MatMul", ["hn", "wk"], ["k"]),
        helper.make_node("MatMul", ["hn", "wv"], ["v"]),
        helper.make_node("Mul", ["q", "qscale"], ["qs"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["qs", "kt"], ["att"], name="/attention/MatMul"),
        helper.make_node("Softmax", ["att"], ["probs"], axis=-1, name="/attention/Softmax"),
        helper.make_node("MatMul", ["probs", "v"], ["ctx"], name="/attention/MatMul_1"),
        helper.make_node("ReduceMean", ["ctx"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w_out"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [t.scores], axis=-1, name=f"{POST}softmax"),
    ]
    inits = [
        numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array([0, 4, 48], dtype=np.int64), "tokens_shape"),
        w("w_in", 48, dim),
        numpy_helper.from_array(np.ones(dim, dtype=np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(dim, dtype=np.float32), "beta"),
        w("wq", dim, dim),
        w("wk", dim, dim),
        w("wv", dim, dim),
        numpy_helper.from_array(np.array(0.25, dtype=np.float32), "qscale"),
        w("w_out", dim, len(CLASSES)),
    ]
    for i, node in enumerate(nodes):
        node.name = node.name or f"{node.op_type}_{i}"
    graph = helper.make_graph(
        nodes,
        "attention_classifier",
        [helper.make_tensor_value_info(t.pixels, TensorProto.UINT8, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info(t.scores, TensorProto.FLOAT, ["batch", len(CLASSES)])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def fp16(model: onnx.ModelProto, keep_fp32: list[str], path: Path) -> Path:
    """Converted the way `dfserve.export.precision` converts (the scoring Softmax stays FP32, as dfserve composes
    its scoring graph after conversion)."""
    import onnxslim

    converted = onnxslim.slim(
        convert_float_to_float16(model, keep_io_types=True, op_block_list=keep_fp32, node_block_list=[f"{POST}softmax"])
    )
    onnx.save(converted, path)
    return path


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    return _install(monkeypatch, StandIn())


def _install(monkeypatch: pytest.MonkeyPatch, standin: StandIn) -> StandIn:
    monkeypatch.setitem(sys.modules, "tensorrt", standin.tensorrt())
    for name, module in standin.cuda_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    return standin


def test_the_fp16_attention_graph_is_fused_and_recorded(standin: StandIn, tmp_path: Path) -> None:
    spec = make_spec()
    graph = fp16(attention_classifier(), ["LayerNormalization"], tmp_path / "model.fp16.onnx")
    assert attention_sites(graph) == 1
    plan = tmp_path / "model.plan"
    info = build_engine(graph, plan, spec, EngineOptions.from_spec(spec))
    assert info.attention == "fused"
    record = read_engine_record(record_path(plan))
    assert record.attention == "fused"
    attention = (record.layers or {})["attention"]
    assert attention["fused_examples"] and attention["fused_examples"][0].startswith("_gemm_mha_v2")


def test_softmax_kept_in_fp32_leaves_attention_unfused_and_fails_the_build(
    standin: StandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The graph dfserve wrote before issue 24 (Softmax behind FP32 casts) does not match TensorRT's MHA pattern."""
    spec = make_spec()
    graph = fp16(attention_classifier(), ["LayerNormalization", "Softmax"], tmp_path / "old.fp16.onnx")
    plan = tmp_path / "model.plan"
    with pytest.raises(EngineBuildError, match=f"attention unfused.*/attention/Softmax.*{UNFUSED_FLAG}"):
        build_engine(graph, plan, spec, EngineOptions.from_spec(spec))
    assert read_engine_record(record_path(plan)).attention == "unfused"  # the record says why
    with caplog.at_level(logging.WARNING):
        info = build_engine(graph, plan, spec, EngineOptions.from_spec(spec, allow_unfused_attention=True))
    assert info.attention == "unfused" and "!!! TensorRT left attention unfused" in caplog.text


def test_a_tensorrt_that_does_not_fuse_is_caught(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _install(monkeypatch, StandIn(fuse_attention=False))
    spec = make_spec()
    graph = fp16(attention_classifier(), ["LayerNormalization"], tmp_path / "model.fp16.onnx")
    with pytest.raises(EngineBuildError, match="attention unfused"):
        build_engine(graph, tmp_path / "model.plan", spec, EngineOptions.from_spec(spec))
    # an FP32 engine is recorded, not gated: TensorRT fuses FP16/BF16 attention only
    fp32 = tmp_path / "model.onnx"
    onnx.save(attention_classifier(), fp32)
    info = build_engine(fp32, tmp_path / "fp32.plan", spec, EngineOptions.from_spec(spec, precision="fp32"))
    assert info.attention == "unfused"

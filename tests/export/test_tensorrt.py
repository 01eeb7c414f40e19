"""The TensorRT path around the TensorRT calls (TensorRT and GPUs do not exist on the development machine): options,
the ONNX input check, the engine inspector's summary, the parity gate, the compatibility record and the host probes.
The TensorRT calls themselves run against a recording stand-in in test_tensorrt_contract.py.

`classifier` is a small transformer-style graph (uint8 pixels, a decomposed LayerNorm like the one torch exports, a
fused LayerNormalization, pooling, Softmax) used by both files.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfserve.engine.gpus import GpuInfo, local_gpus, parse_nvidia_smi
from dfserve.engine.records import (
    EngineInfo,
    check_engine_compatibility,
    decode_infer_lib_version,
    installed_tensorrt_version,
    record_path,
)
from dfserve.engine.tensorrt import INSTALL_HINT, require_tensorrt
from dfserve.errors import BuildError, EngineCompatibilityError, EngineError, ParityError, TensorRTUnavailableError
from dfserve.export.tensorrt import (
    EngineOptions,
    build_engine,
    check_onnx_input,
    fp16_parity,
    summarize_engine_information,
    tensor_dtype,
)
from dfserve.spec.model import Batching, Labels, ModelSpec, Preprocessing
from tests.engines import H100, write_plan_with_record

HW = (8, 8)
CLASSES = ("a", "b", "c", "d", "e")
H100_PCIE = GpuInfo("NVIDIA H100 PCIe", "9.0")
L4 = GpuInfo("NVIDIA L4", "8.9")
T4 = GpuInfo("Tesla T4", "7.5")

tensorrt_missing = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed on this host"
)


def make_spec(batching: Batching | None = None) -> ModelSpec:
    return ModelSpec(
        source="test",
        labels=Labels(names=CLASSES, activation="softmax", num_logits=len(CLASSES)),
        preprocessing=Preprocessing(resize="fixed", size=HW),
        batching=batching or Batching(),
    )


# ---------------------------------------------------------------------------------------------------------------
# A small classifier graph, and its FP16 conversions driven by the layer policy


def _const(name: str, value: np.ndarray | float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def classifier(spec: ModelSpec, outlier: float) -> onnx.ModelProto:
    """uint8 pixels [N,3,8,8] -> softmax scores [N,5]. `outlier` scales one hidden channel, as ViTs have."""
    rng = np.random.default_rng(7)
    dim = 16
    w1 = rng.normal(0, 0.3, size=(48, dim))
    w1[:, 3] *= outlier
    t = spec.tensors
    nodes = [
        helper.make_node("Cast", [t.pixels], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "scale"], ["xs"]),
        helper.make_node("Sub", ["xs", "half"], ["xn"]),
        helper.make_node("Reshape", ["xn", "tokens_shape"], ["tok"]),
        helper.make_node("MatMul", ["tok", "w1"], ["h"]),
        # LayerNorm as torch decomposes it
        helper.make_node("ReduceMean", ["h"], ["mu"], axes=[-1]),
        helper.make_node("Sub", ["h", "mu"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["ln1"]),
        helper.make_node("MatMul", ["ln1", "w2"], ["h2"]),
        helper.make_node("Erf", ["h2"], ["g"]),
        helper.make_node("LayerNormalization", ["g", "gamma", "beta"], ["ln2"], axis=-1),
        helper.make_node("ReduceMean", ["ln2"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w3"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [t.scores], axis=-1, name="dfserve_post_softmax"),  # scoring
    ]
    inits = [
        _const("scale", 1 / 127.5),
        _const("half", 1.0),
        numpy_helper.from_array(np.array([0, 4, 48], dtype=np.int64), "tokens_shape"),
        _const("w1", w1),
        _const("two", 2.0),
        _const("eps", 1e-5),
        _const("w2", rng.normal(0, 0.5, size=(dim, dim))),
        _const("gamma", np.ones(dim)),
        _const("beta", np.zeros(dim)),
        _const("w3", rng.normal(0, 1.0, size=(dim, len(CLASSES)))),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info(t.pixels, TensorProto.UINT8, ["batch", 3, *spec.input_hw])],
        [helper.make_tensor_value_info(t.scores, TensorProto.FLOAT, ["batch", len(CLASSES)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_ort(model: onnx.ModelProto, spec: ModelSpec, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([spec.tensors.scores], {spec.tensors.pixels: pixels})[0])


# ---------------------------------------------------------------------------------------------------------------
# TensorRT is missing here: one clear message


@tensorrt_missing
def test_require_tensorrt_names_where_engines_are_built() -> None:
    with pytest.raises(TensorRTUnavailableError) as info:
        require_tensorrt()
    message = str(info.value)
    assert message.startswith("TensorRT is not installed")
    assert "docker compose run --rm build" in message and "dfserve[gpu]" in message
    assert isinstance(info.value, EngineError)  # the engine area's, printed by the CLI as one line


@tensorrt_missing
def test_build_engine_checks_its_inputs_then_stops_at_tensorrt(tmp_path: Path) -> None:
    spec = make_spec()
    onnx_path = tmp_path / "model.onnx"
    onnx.save(classifier(spec, outlier=1.0), onnx_path)
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        build_engine(onnx_path, tmp_path / "model.plan", spec, EngineOptions.from_spec(spec))
    assert not (tmp_path / "model.plan").exists()
    assert INSTALL_HINT in str(TensorRTUnavailableError(INSTALL_HINT))


@tensorrt_missing
def test_host_probes_report_nothing_on_a_host_without_tensorrt_or_gpu() -> None:
    assert installed_tensorrt_version() is None
    assert local_gpus() == []  # no nvidia-smi here


# ---------------------------------------------------------------------------------------------------------------
# Options from the one ModelSpec


def test_engine_options_come_from_the_spec() -> None:
    spec = make_spec(Batching(max_batch_size=64, preferred_batch_sizes=(8, 16, 32)))
    options = EngineOptions.from_spec(spec)
    assert (options.min_batch, options.opt_batch, options.max_batch) == (1, 32, 64)
    assert options.precision == "fp16"
    assert options.shapes(spec) == ((1, 3, *HW), (32, 3, *HW), (64, 3, *HW))


def test_engine_options_accept_overrides_that_still_cover_tritons_batches(tmp_path: Path) -> None:
    spec = make_spec()
    options = EngineOptions.from_spec(
        spec, opt_batch=8, max_batch=128, precision="fp32", timing_cache=tmp_path / "t.cache", optimization_level=5
    )
    assert (options.opt_batch, options.max_batch, options.precision) == (8, 128, "fp32")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_batch": 16, "opt_batch": 8}, "below the model's max_batch_size 32"),
        ({"min_batch": 2}, "Triton sends single requests"),
        ({"opt_batch": 64}, "min <= opt <= max"),
        ({"precision": "int8"}, "precision"),
        ({"optimization_level": 9}, "optimization_level"),
        ({"workspace_bytes": 1}, "workspace_bytes"),
    ],
)
def test_engine_options_refuse_a_profile_triton_cannot_use(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(BuildError, match=message):
        EngineOptions.from_spec(make_spec(), **overrides)


# ---------------------------------------------------------------------------------------------------------------
# The ONNX graph handed to TensorRT


def test_onnx_input_check_accepts_the_spec_graph_and_names_mismatches(tmp_path: Path) -> None:
    spec = make_spec()
    good = tmp_path / "good.onnx"
    onnx.save(classifier(spec, outlier=1.0), good)
    check_onnx_input(good, spec)

    other_size = make_spec().model_copy(update={"preprocessing": Preprocessing(resize="fixed", size=(16, 16))})
    with pytest.raises(BuildError, match=r"\[batch, 3, 16, 16\]"):
        check_onnx_input(good, other_size)

    model = classifier(spec, outlier=1.0)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # a fixed batch
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, fixed)
    with pytest.raises(BuildError, match="dynamic batch"):
        check_onnx_input(fixed, spec)

    renamed = make_spec().model_copy(update={"tensors": spec.tensors.model_copy(update={"pixels": "input"})})
    with pytest.raises(BuildError, match="no input 'input'"):
        check_onnx_input(good, renamed)

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(BuildError, match="cannot read ONNX model"):
        check_onnx_input(tmp_path / "junk.onnx", spec)


# ---------------------------------------------------------------------------------------------------------------
# The engine inspector's JSON, summarised

INSPECTOR_SAMPLE = Path(__file__).with_name("data") / "engine_information_vit_fp16.json"


def test_inspector_summary_counts_output_types_and_names_fp32_layers_and_tactics() -> None:
    summary = summarize_engine_information(INSPECTOR_SAMPLE.read_text())
    assert summary["detailed"] is True and summary["layers"] == 8
    assert summary["bindings"] == ["pixels", "scores"]
    assert summary["by_output_dtype"] == {"fp16": 4, "fp32": 3, "unknown": 1}
    assert summary["fp32_layers"] == [
        "/pre/Cast + /pre/Mul + /pre/Sub",
        "{ForeignNode[/vit/encoder/layer.11/layernorm_after/LayerNormalization.../vit/layernorm/LayerNormalization]}",
        "/post/Sigmoid + /post/Concat",
    ]
    assert summary["layer_types"]["Myelin"] == 2 and summary["layer_types"]["CaskConvolution"] == 1
    conv = "sm90_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_nhwckrsc_nhwc_tilesize128x128x64_stage4_warpsize2x2x1"
    assert summary["tactics"][conv] == 1
    assert summary["tactics"]["0x0000000000000000"] == 3  # Myelin and NoOp layers give a value, no name
    assert summary["distinct_tactics"] == 6


def test_inspector_summary_without_detail_or_json_says_so() -> None:
    names_only = summarize_engine_information('{"Layers": ["conv1 + relu", "fc"], "Bindings": ["x", "y"]}')
    assert names_only == {"layers": 2, "detailed": False, "bindings": ["x", "y"]}
    with pytest.raises(ValueError, match="not JSON"):
        summarize_engine_information("Layers: conv1")
    with pytest.raises(ValueError, match="no 'Layers' list"):
        summarize_engine_information('{"Bindings": []}')


@pytest.mark.parametrize(
    ("text", "dtype"),
    [
        ("Row major linear FP16 format", "fp16"),
        ("Channel major FP16 format where channel % 8 == 0", "fp16"),
        ("Thirty-two wide channel vectorized row major Int8 format.", "int8"),
        ("Row major linear FP32", "fp32"),
        ("Float", "fp32"),
        ("Half", "fp16"),
        ("Row major linear UInt8 format", "uint8"),
        ("Row major linear BF16 format", "bf16"),
        ("N/A due to dynamic shapes", "unknown"),
    ],
)
def test_format_strings_name_their_data_type(text: str, dtype: str) -> None:
    assert tensor_dtype(text) == dtype


# ---------------------------------------------------------------------------------------------------------------
# The parity gate itself


def test_parity_gate_reports_both_failures_and_refuses_non_finite_scores() -> None:
    ref = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]], dtype=np.float32)
    assert fp16_parity(ref, ref + 0.004).max_abs_diff == pytest.approx(0.004, abs=1e-6)

    flipped = ref.copy()
    flipped[1] = [0.62, 0.38]
    with pytest.raises(ParityError) as info:
        fp16_parity(ref, flipped)
    assert "max |Δscore| 0.22 > 0.01" in str(info.value) and "top-1 agreement 75.00% < 99.5%" in str(info.value)

    with pytest.raises(ParityError, match="non-finite scores for 1 of 4"):
        fp16_parity(ref, np.where(np.arange(8).reshape(4, 2) == 2, np.nan, ref))
    with pytest.raises(ParityError, match=r"shape \(3, 2\)"):
        fp16_parity(ref, ref[:3])


# ---------------------------------------------------------------------------------------------------------------
# The compatibility record and check


def _record(plan: Path, trt: str = "10.5.0", gpu: GpuInfo = H100, hardware: str = "none") -> Path:
    return write_plan_with_record(plan, trt, gpu, hardware)


def test_engine_record_round_trips(tmp_path: Path) -> None:
    plan = tmp_path / "vit" / "1" / "model.plan"
    path = _record(plan)
    assert path == record_path(plan) and path.name == "model.plan.json"
    data = json.loads(path.read_text())
    assert data["tensorrt_version"] == "10.5.0" and data["compute_capability"] == "9.0"
    assert EngineInfo.from_dict(data).input_shape == (3, 384, 384)


def test_compatibility_accepts_the_same_release_and_architecture(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    _record(repo / "vit" / "1" / "model.plan", trt="10.5.0.18")
    check_engine_compatibility(repo, "10.5.0", [H100])
    check_engine_compatibility(repo / "vit" / "1" / "model.plan", "10.5.0.26", [H100])
    check_engine_compatibility(repo / "vit" / "1" / "model.plan.json", "10.5", [H100_PCIE])
    assert "will run on NVIDIA H100 PCIe" in caplog.text  # same sm_90, another model: loads, logged


def test_compatibility_names_both_sides_of_a_mismatch(tmp_path: Path) -> None:
    plan = tmp_path / "model.plan"
    _record(plan, trt="10.3.0", gpu=GpuInfo("NVIDIA H100", "9.0"))
    with pytest.raises(EngineCompatibilityError) as info:
        check_engine_compatibility(plan, "10.5.0", [GpuInfo("NVIDIA L4", "8.9")])
    assert str(info.value) == (
        f"engine {plan} was built for TensorRT 10.3.0 on NVIDIA H100 (sm_90) but this host has "
        "TensorRT 10.5.0 / NVIDIA L4 (sm_89): rebuild with `dfserve build --engine tensorrt` on this host"
    )
    with pytest.raises(EngineCompatibilityError, match=r"this host has TensorRT 10\.3\.0 / NVIDIA L4 \(sm_89\)"):
        check_engine_compatibility(plan, "10.3.0", [L4])
    with pytest.raises(EngineCompatibilityError, match=r"TensorRT 10\.5\.0 / NVIDIA H100 80GB HBM3 \(sm_90\)"):
        check_engine_compatibility(plan, "10.5.0", [H100])
    with pytest.raises(EngineCompatibilityError, match="no GPU"):
        check_engine_compatibility(plan, "10.3.0", [])
    with pytest.raises(EngineCompatibilityError, match="this host has no TensorRT"):
        check_engine_compatibility(plan, None, [H100])
    with pytest.raises(EngineCompatibilityError, match=r"NVIDIA H100 80GB HBM3 \(sm_90\) / NVIDIA L4 \(sm_89\)"):
        check_engine_compatibility(plan, "10.3.0", [H100, L4])  # every GPU Triton may use must fit


def test_ampere_plus_plans_load_on_any_ampere_or_newer_gpu(tmp_path: Path) -> None:
    plan = tmp_path / "model.plan"
    _record(plan, gpu=H100, hardware="ampere_plus")
    check_engine_compatibility(plan, "10.5.0", [L4, H100])
    with pytest.raises(EngineCompatibilityError, match=r"Ampere\+ hardware compatibility.*Tesla T4 \(sm_75\)"):
        check_engine_compatibility(plan, "10.5.0", [T4])


def test_compatibility_refuses_a_plan_without_record_and_passes_an_onnx_repository(tmp_path: Path) -> None:
    onnx_repo = tmp_path / "onnx_repo" / "vit" / "1"
    onnx_repo.mkdir(parents=True)
    (onnx_repo / "model.onnx").write_bytes(b"onnx")
    check_engine_compatibility(tmp_path / "onnx_repo", None, [])

    bare = tmp_path / "bare" / "vit" / "1" / "model.plan"
    bare.parent.mkdir(parents=True)
    bare.write_bytes(b"plan")
    with pytest.raises(EngineCompatibilityError, match="has no compatibility record"):
        check_engine_compatibility(tmp_path / "bare", "10.5.0", [H100])

    record_path(bare).write_text("{not json")
    with pytest.raises(EngineCompatibilityError, match="cannot read the engine record"):
        check_engine_compatibility(bare, "10.5.0", [H100])
    with pytest.raises(EngineCompatibilityError, match="does not exist"):
        check_engine_compatibility(tmp_path / "nowhere", "10.5.0", [H100])


# ---------------------------------------------------------------------------------------------------------------
# Probing the host


def test_nvidia_smi_output_is_parsed_per_gpu() -> None:
    text = "NVIDIA H100 80GB HBM3, 9.0\nNVIDIA L4, 8.9\n"
    assert parse_nvidia_smi(text) == [H100, L4]
    assert parse_nvidia_smi("") == []
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_nvidia_smi("No devices were found")


@pytest.mark.parametrize(
    ("value", "version"), [(100500, "10.5.0"), (100301, "10.3.1"), (8601, "8.6.1"), (8503, "8.5.3")]
)
def test_libnvinfer_version_numbers_decode(value: int, version: str) -> None:
    assert decode_infer_lib_version(value) == version


def test_timing_cache_write_is_atomic(tmp_path: Path) -> None:
    """A failed write keeps the old cache whole and leaves no temporary file; a good one replaces it."""
    from dfserve.engine.records import write_atomic

    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(cache, "not bytes")  # type: ignore[arg-type]
    assert cache.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["timing.cache"]
    write_atomic(cache, b"new")
    assert cache.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["timing.cache"]

"""`build_engine`, `run_engine` and the GPU probe against a recording stand-in of `tensorrt` and of cuda-python's
runtime bindings (tests/export/trt_standin.py), injected through sys.modules.

TensorRT cannot run here; these tests make an AttributeError-class mistake (a wrong enum member, a wrong argument
type, a call out of order, a precision flag on a strongly typed network) fail on this machine, and run the whole
`dfserve build --engine tensorrt` pipeline with it. The stand-in's engine is the ONNX graph run by ONNX Runtime, so
the scores are real numbers of the graph TensorRT was given.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.transformers.float16 import convert_float_to_float16

from dfserve.engine.gpus import cuda_gpus, local_gpus
from dfserve.engine.records import read_engine_record, record_path
from dfserve.engine.tensorrt import run_engine
from dfserve.errors import BuildError, EngineBuildError
from dfserve.export.tensorrt import EngineOptions, build_engine
from dfserve.spec.model import Batching
from tests.export.test_tensorrt import classifier, make_spec, run_ort
from tests.export.trt_standin import BuilderFlag, StandIn, StandInError, plan_header


def install(monkeypatch: pytest.MonkeyPatch, standin: StandIn) -> StandIn:
    monkeypatch.setitem(sys.modules, "tensorrt", standin.tensorrt())
    for name, module in standin.cuda_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    return standin


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    return install(monkeypatch, StandIn())


def fp16_graph(tmp_path: Path) -> tuple[Path, onnx.ModelProto]:
    """The test classifier in FP16 the way dfserve converts (ONNX Runtime's converter, LayerNormalization and
    Softmax blocked, FP32 at the boundary)."""
    import onnxslim

    spec = make_spec()
    model = onnxslim.slim(  # back in topological order, as dfserve.export.precision does
        convert_float_to_float16(
            classifier(spec, outlier=1.0), keep_io_types=True, op_block_list=["LayerNormalization", "Softmax"]
        )
    )
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"
    path = tmp_path / "model.fp16.onnx"
    onnx.save(model, path)
    return path, model


def test_build_and_run_a_strongly_typed_engine_end_to_end(trt: StandIn, tmp_path: Path) -> None:
    spec = make_spec(Batching(max_batch_size=32))
    onnx_path, model = fp16_graph(tmp_path)
    plan = tmp_path / "engine" / "model.plan"
    cache = tmp_path / "cache" / "timing.cache"
    options = EngineOptions.from_spec(spec, timing_cache=cache, hardware_compatibility="ampere_plus")
    info = build_engine(onnx_path, plan, spec, options)

    # strongly typed, no precision flags, every setting through the right enum, in order
    methods = trt.methods()
    assert ("Builder", "create_network", (1 << 1,)) in trt.calls  # 1 << int(STRONGLY_TYPED)
    assert not any(m == "IBuilderConfig.set_flag" for m in methods)
    order = [
        "Builder.create_network",
        "OnnxParser.parse_from_file",
        "IBuilderConfig.set_memory_pool_limit",
        "IBuilderConfig.builder_optimization_level=",
        "IBuilderConfig.profiling_verbosity=",
        "IBuilderConfig.hardware_compatibility_level=",
        "IOptimizationProfile.set_shape",
        "IBuilderConfig.add_optimization_profile",
        "IBuilderConfig.set_timing_cache",
        "Builder.build_serialized_network",
        "Runtime.deserialize_cuda_engine",
        "ICudaEngine.create_execution_context",
        "IExecutionContext.set_input_shape",
        "EngineInspector.execution_context=",
        "EngineInspector.get_engine_information",
    ]
    positions = [methods.index(m) for m in order]
    assert positions == sorted(positions), list(zip(order, positions, strict=True))
    shape_call = next(c for c in trt.calls if c[1] == "set_input_shape")
    assert shape_call[2] == ("pixels", (32, 3, 8, 8))  # the inspector looks at the opt shape
    header = plan_header(plan.read_bytes())
    assert header["strongly_typed"] and header["verbosity"] == "DETAILED"
    assert header["profile"]["pixels"] == [[1, 3, 8, 8], [32, 3, 8, 8], [32, 3, 8, 8]]
    assert cache.read_bytes().startswith(b"STANDIN-CACHE")  # saved (atomically) after the build

    # the engine's own record: what TensorRT did, per output type, with the FP32 layers named
    record = read_engine_record(record_path(plan))
    assert record == info and record.strongly_typed and record.optimization_level == 3
    assert record.attention == "none"  # this classifier has no attention block (the scoring Softmax is not one)
    assert record.gpu_name == "NVIDIA H100 80GB HBM3" and record.compute_capability == "9.0"
    assert record.gpu_uuid == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"
    layers = record.layers or {}
    assert layers["detailed"] and layers["layers"] == len(model.graph.node)
    assert layers["by_output_dtype"]["fp16"] > 0 and layers["by_output_dtype"]["fp32"] > 0
    ln = next(n.name for n in model.graph.node if n.op_type == "LayerNormalization")
    softmax = next(n.name for n in model.graph.node if n.op_type == "Softmax")
    assert ln in layers["fp32_layers"] and softmax in layers["fp32_layers"]
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    assert matmuls and not set(matmuls) & set(layers["fp32_layers"])  # the heavy layers run in FP16

    # run it: 70 images in chunks of the max batch, equal to the graph it was built from
    pixels = np.random.default_rng(1).integers(0, 256, size=(70, 3, 8, 8), dtype=np.uint8)
    trt.calls.clear()
    scores = run_engine(plan, pixels, spec)
    np.testing.assert_array_equal(scores, run_ort(model, spec, pixels).astype(np.float32))
    assert scores.dtype == np.float32 and scores.shape == (70, 5)
    run_methods = trt.methods()
    assert run_methods.count("IExecutionContext.execute_async_v3") == 3  # 32 + 32 + 6
    assert run_methods.count("cudart.cudaMalloc") == run_methods.count("cudart.cudaFree") == 6
    assert trt.device == {} and trt.streams == {}  # every allocation freed, the stream destroyed


def test_the_standin_refuses_what_tensorrt_refuses(trt: StandIn, tmp_path: Path) -> None:
    """The weak-typing calls this build replaced, and type mistakes, fail here as they would on a GPU."""
    tensorrt = sys.modules["tensorrt"]
    onnx_path, _ = fp16_graph(tmp_path)
    logger = tensorrt.Logger(tensorrt.Logger.WARNING)
    builder = tensorrt.Builder(logger)
    network = builder.create_network(1 << int(tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert tensorrt.OnnxParser(network, logger).parse_from_file(str(onnx_path))
    config = builder.create_builder_config()
    with pytest.raises(StandInError, match="MemoryPoolType"):
        config.set_memory_pool_limit(0, 1 << 30)
    with pytest.raises(AttributeError):
        config.max_workspace_size = 1 << 30  # removed in TensorRT 10
    with pytest.raises(AttributeError):
        tensorrt.ProfilingVerbosity.VERBOSE  # noqa: B018 (not a member)
    profile = builder.create_optimization_profile()
    profile.set_shape("pixels", (1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))
    config.add_optimization_profile(profile)
    config.set_flag(BuilderFlag.FP16)
    with pytest.raises(StandInError, match="not allowed on a strongly typed network"):
        builder.build_serialized_network(network, config)


@pytest.mark.parametrize(("version", "member"), [("11.0.0", True), ("12.0.0", False)])
def test_a_tensorrt_that_only_builds_strongly_typed_networks_is_handled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str, member: bool
) -> None:
    standin = install(monkeypatch, StandIn(version=version, strongly_typed_member=member))
    spec = make_spec()
    onnx_path, _ = fp16_graph(tmp_path)
    info = build_engine(onnx_path, tmp_path / "model.plan", spec, EngineOptions.from_spec(spec))
    flags = next(c[2][0] for c in standin.calls if c[1] == "create_network")
    assert flags == (1 << 1 if member else 0)
    assert plan_header((tmp_path / "model.plan").read_bytes())["strongly_typed"]
    assert info.tensorrt_version == version


def test_a_tensorrt_without_the_api_is_named_in_one_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = make_spec()
    onnx_path, _ = fp16_graph(tmp_path)
    install(monkeypatch, StandIn(version="9.3.0", strongly_typed_member=False))
    with pytest.raises(
        EngineBuildError, match=r"TensorRT 9\.3\.0 has no NetworkDefinitionCreationFlag\.STRONGLY_TYPED"
    ):
        build_engine(onnx_path, tmp_path / "a.plan", spec, EngineOptions.from_spec(spec))

    install(monkeypatch, StandIn(version="10.5.0"))
    monkeypatch.delattr(sys.modules["tensorrt"], "ProfilingVerbosity")
    with pytest.raises(EngineBuildError, match=r"TensorRT 10\.5\.0 has no ProfilingVerbosity\.DETAILED") as info:
        build_engine(onnx_path, tmp_path / "b.plan", spec, EngineOptions.from_spec(spec))
    assert isinstance(info.value, BuildError) and not (tmp_path / "b.plan").exists()


def test_gpus_come_from_the_cuda_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    second = {
        "name": "NVIDIA L4",
        "major": 8,
        "minor": 9,
        "pciDomainID": 0,
        "pciBusID": 0xCA,
        "pciDeviceID": 0,
        "uuid": bytes.fromhex("5f1e0a3c9b2d4e6f8a7b6c5d4e3f2a1b"),
    }
    standin = install(monkeypatch, StandIn())
    standin.gpus.append(second)
    gpus = local_gpus()
    assert [(g.name, g.compute_capability, g.sm) for g in gpus] == [
        ("NVIDIA H100 80GB HBM3", "9.0", "sm_90"),
        ("NVIDIA L4", "8.9", "sm_89"),
    ]
    assert gpus[0].pci_bus_id == "00000000:65:00.0" and gpus[1].pci_bus_id == "00000000:CA:00.0"
    assert gpus[1].uuid == "GPU-5f1e0a3c-9b2d-4e6f-8a7b-6c5d4e3f2a1b"
    assert [c[1] for c in standin.calls] == ["cudaGetDeviceCount", "cudaGetDeviceProperties", "cudaGetDeviceProperties"]

    standin.gpus.clear()  # a driver without devices: the runtime's error, not a crash
    with pytest.raises(EngineBuildError, match="cudaErrorNoDevice"):
        cuda_gpus()
    assert local_gpus() == []


@pytest.mark.slow
def test_dfserve_build_tensorrt_runs_the_whole_pipeline_with_the_standin(
    trt: StandIn, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """`dfserve build --engine tensorrt`: FP16 graph proven on the CPU, engine built from that graph strongly typed,
    gated, inspected, and the repository written with the GPU serving settings."""
    from dfserve.cli import main
    from dfserve.repository.configs import read_config

    out = tmp_path / "repo"
    code = main(["build", "--model", str(tiny_checkpoint), "--engine", "tensorrt", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "build_report.json").read_text())
    assert report["precision"]["served"] == "fp16" and report["precision"]["vs_reference"]["flips"] == 0
    engine = report["engine"]
    assert engine["strongly_typed"] and engine["precision"] == "fp16" and engine["max_abs_diff_vs_built_graph"] == 0
    assert engine["parity"]["max_abs_diff"] <= 1e-2
    assert engine["layers"]["by_output_dtype"]["fp16"] > 0 and engine["layers"]["fp32_layers"]
    assert engine["attention"] == "fused"  # the ViT's FP16 MatMul → Softmax → MatMul, fused by the stand-in's rule
    assert engine["layers"]["attention"]["fused_layers"] == engine["layers"]["attention"]["sites"] == 2
    # the engine was built from the FP16 graph, not the FP32 one
    parsed = next(c[2][0] for c in trt.calls if c[1] == "parse_from_file")
    assert Path(parsed).name == "model.fp16.onnx"

    vit, pre = read_config(out / "vit"), read_config(out / "preprocess")
    assert vit.platform == "tensorrt_plan" and vit.instance_group[0].count == 2
    assert list(vit.dynamic_batching.preferred_batch_size) == []
    graphs = vit.optimization.cuda.graph_spec
    assert vit.optimization.cuda.graphs and vit.max_batch_size == 64  # GpuServing.max_batch_size
    assert [(g.graph_lower_bound.batch_size, g.batch_size) for g in graphs] == [
        (1, 1),
        (2, 2),
        (3, 4),
        (5, 8),
        (9, 16),
        (17, 24),
        (25, 32),
        (33, 48),
        (49, 64),
    ]  # a graph for every batch 1..64
    assert engine["opt_batch"] == engine["max_batch"] == 64 and engine["min_batch"] == 1
    assert pre.instance_group[0].count == (os.cpu_count() or 1)
    assert (out / "vit" / "1" / "model.plan").is_file() and (out / "vit" / "1" / "model.plan.json").is_file()


def test_an_inspector_that_fails_leaves_the_engine_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The layer record is for people: a TensorRT whose inspector API differs still yields the (gated) engine."""
    spec = make_spec()
    onnx_path, _ = fp16_graph(tmp_path)
    install(monkeypatch, StandIn(version="10.99.0"))
    monkeypatch.delattr(sys.modules["tensorrt"], "LayerInformationFormat")
    info = build_engine(onnx_path, tmp_path / "model.plan", spec, EngineOptions.from_spec(spec))
    assert (tmp_path / "model.plan").is_file()
    assert info.layers == {
        "error": "EngineBuildError: TensorRT 10.99.0 has no LayerInformationFormat.JSON: dfserve builds with the "
        "TensorRT 10 Python API (use NVIDIA's TensorRT container of the release in .env)"
    }

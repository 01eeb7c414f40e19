"""config.pbtxt files are generated through Triton's protobuf and parsed back with it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from dfserve.repository import configs
from dfserve.repository.writer import write_repository
from dfserve.spec.model import Batching, Labels, ModelSpec, Preprocessing

SPEC = ModelSpec(
    source="test",
    labels=Labels(names=("cat", "dog", "bird"), activation="softmax", num_logits=3),
    preprocessing=Preprocessing(resize="shortest_edge", size=440, crop=(384, 320), resample=3),
    batching=Batching(
        max_batch_size=16,
        preferred_batch_sizes=(4, 16),
        max_queue_delay_us=500,
        engine_instances=2,
        preprocess_instances=3,
        preprocess_max_batch_size=8,
    ),
)


@pytest.mark.parametrize("target", configs.TARGETS)
def test_engine_config_from_spec(target: configs.Target, tmp_path: Path) -> None:
    configs.write_config(configs.engine_config(SPEC, target), tmp_path)
    cfg = configs.read_config(tmp_path)
    assert cfg.name == "vit" and cfg.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("pixels", model_config_pb2.TYPE_UINT8, [3, 384, 320])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("scores", model_config_pb2.TYPE_FP32, [3])]
    # preferred sizes send a batch as soon as one is reached; the one-profile TensorRT engine never declares them
    assert list(cfg.dynamic_batching.preferred_batch_size) == ([] if target == "tensorrt" else [4, 16])
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.instance_group[0].count == 2
    assert [w.batch_size for w in cfg.model_warmup] == [1, 16]
    assert cfg.version_policy.latest.num_versions == 1
    expected = {"python": ("", "python"), "container": ("onnxruntime_onnx", ""), "tensorrt": ("tensorrt_plan", "")}
    assert (cfg.platform, cfg.backend) == expected[target]
    if target == "tensorrt":
        assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert configs.spec_from_config(cfg) == SPEC


def test_preprocess_and_ensemble_configs() -> None:
    pre = configs.preprocess_config(SPEC)
    assert pre.backend == "python" and pre.max_batch_size == 8 and pre.instance_group[0].count == 3
    assert pre.input[0].data_type == model_config_pb2.TYPE_STRING and list(pre.output[0].dims) == [3, 384, 320]
    ens = configs.ensemble_config(SPEC)
    assert ens.platform == "ensemble" and ens.max_batch_size == 8  # bounded by its smallest member
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["preprocess", "vit"]
    assert steps[0].output_map["pixels"] == steps[1].input_map["pixels"]
    assert ens.output[0].label_filename == "labels.txt"


def test_schema_rejects_unknown_fields() -> None:
    with pytest.raises(json_format.ParseError):
        configs._parse({"name": "x", "max_batchsize": 3})


def test_repository_layout(tmp_path: Path) -> None:
    onnx_path = tmp_path / "fake.onnx"
    onnx_path.write_bytes(b"placeholder graph bytes")  # the writer copies; graphs are tested elsewhere
    out = write_repository(SPEC, tmp_path / "repo", target="python", onnx_path=onnx_path)
    assert ModelSpec.load(out) == SPEC
    assert (out / "vit/1/model.onnx").read_bytes() == onnx_path.read_bytes()
    shim = (out / "preprocess/1/model.py").read_text()
    assert "DFSERVE_PYTHONPATH" in shim and "dfserve.repository.backends.preprocess" in shim
    compile(shim, "model.py", "exec")
    assert (out / "detector/labels.txt").read_text().split() == ["cat", "dog", "bird"]
    warm = (out / "preprocess/warmup/image.bin").read_bytes()
    assert int.from_bytes(warm[:4], "little") == len(warm) - 4 and warm[4:6] == b"\xff\xd8"  # length + JPEG
    container = write_repository(SPEC, tmp_path / "c", target="container", onnx_path=onnx_path)
    assert not (container / "vit/1/model.py").exists()


def test_default_batching_has_no_preferred_sizes_so_the_queue_delay_applies(tmp_path: Path) -> None:
    spec = ModelSpec(
        source="x",
        labels=Labels(names=("real", "fake"), activation="sigmoid", num_logits=1),
        preprocessing=Preprocessing(resize="fixed", size=(32, 32)),
    )
    for cfg in (configs.engine_config(spec, "python"), configs.preprocess_config(spec)):
        path = configs.write_config(cfg, tmp_path / cfg.name)
        parsed = configs.read_config(path)
        assert list(parsed.dynamic_batching.preferred_batch_size) == []
        assert parsed.dynamic_batching.max_queue_delay_microseconds == spec.batching.max_queue_delay_us


def test_tensorrt_config_has_the_gpu_serving_settings(tmp_path: Path) -> None:
    """No preferred sizes (the queue delay applies), GPU instances, and CUDA graphs through Triton's schema."""
    from dfserve.spec.model import GpuServing

    gpu = GpuServing(cuda_graph_batch_sizes=(1, 4, 8, 64))
    spec = SPEC.model_copy(update={"batching": gpu.for_gpu(SPEC.batching, cores=12)})
    path = configs.write_config(configs.engine_config(spec, "tensorrt", gpu), tmp_path / "vit")
    cfg = configs.read_config(path)
    assert list(cfg.dynamic_batching.preferred_batch_size) == []  # SPEC has [4, 16]: dropped on the GPU
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert (cfg.instance_group[0].count, cfg.instance_group[0].kind) == (
        2,
        model_config_pb2.ModelInstanceGroup.KIND_GPU,
    )
    cuda = cfg.optimization.cuda
    assert cuda.graphs
    assert [g.batch_size for g in cuda.graph_spec] == [1, 4, 8, 16]  # 64 > max_batch_size 16; the max is added
    assert [g.graph_lower_bound.batch_size for g in cuda.graph_spec] == [1, 2, 5, 9]
    assert all(list(g.input["pixels"].dim) == [3, 384, 320] for g in cuda.graph_spec)
    assert all(list(g.graph_lower_bound.input["pixels"].dim) == [3, 384, 320] for g in cuda.graph_spec)
    assert configs.preprocess_config(spec).instance_group[0].count == 12
    assert configs.spec_from_config(cfg).batching.engine_instances == 2  # the embedded spec agrees

    for target in ("python", "container"):  # the CPU targets keep their batching as it is
        other = configs.engine_config(SPEC, target)
        assert list(other.dynamic_batching.preferred_batch_size) == [4, 16]
        assert not other.optimization.HasField("cuda")


def test_gpu_serving_defaults_and_bounds() -> None:
    from dfserve.spec.model import GpuServing

    gpu = GpuServing()
    assert (gpu.engine_instances, gpu.builder_optimization_level) == (2, 3)
    assert gpu.graph_batch_sizes(32) == (1, 2, 4, 8, 16, 24, 32) and gpu.graph_batch_sizes(12) == (1, 2, 4, 8, 12)
    assert gpu.graph_ranges(12) == ((1, 1), (2, 2), (3, 4), (5, 8), (9, 12))
    assert gpu.max_batch_size == 64 and gpu.graph_batch_sizes(64)[-3:] == (32, 48, 64)
    batching = gpu.for_gpu(Batching(preferred_batch_sizes=(8,)))
    assert batching.preferred_batch_sizes == () and batching.preprocess_instances == (os.cpu_count() or 1)
    assert GpuServing(preprocess_instances=3).for_gpu(Batching(), cores=64).preprocess_instances == 3
    assert GpuServing.opt_batch(batching) == batching.max_batch_size  # what a loaded batcher forms
    with pytest.raises(ValueError, match="positive"):
        GpuServing(cuda_graph_batch_sizes=(0, 4))
    with pytest.raises(ValueError):
        GpuServing(builder_optimization_level=6)


@pytest.mark.parametrize("max_batch", [1, 7, 33, 64, 100])
def test_cuda_graph_specs_cover_every_batch_size(tmp_path: Path, max_batch: int) -> None:
    """Triton's TensorRT backend runs batch b with a graph only if some spec has lower bound <= b <= batch size:
    every b in 1..max_batch_size must have one, in the config.pbtxt as Triton parses it. Only the first spec
    covering b is used, so the ranges must not overlap either."""
    from dfserve.export.policy import default_batching
    from dfserve.spec.model import GpuServing

    gpu = GpuServing()
    batching = default_batching("tensorrt", "fp16").model_copy(update={"max_batch_size": max_batch})
    spec = SPEC.model_copy(update={"batching": gpu.for_gpu(batching, cores=4)})
    cfg = configs.read_config(configs.write_config(configs.engine_config(spec, "tensorrt", gpu), tmp_path / "vit"))
    specs = cfg.optimization.cuda.graph_spec
    for b in range(1, max_batch + 1):
        covering = [g.batch_size for g in specs if g.graph_lower_bound.batch_size <= b <= g.batch_size]
        assert len(covering) == 1, (b, covering)
    assert max(g.batch_size for g in specs) == cfg.max_batch_size == max_batch
    assert default_batching("tensorrt", "fp16").max_batch_size == 64  # the measured GPU max batch (GpuServing)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("target", ["python", "container"])
def test_cpu_defaults_flow_from_the_precision_into_config(precision: str, target: configs.Target) -> None:
    """A build that names no batching gets `CPU_BATCHING[precision]` (the one table), and config.pbtxt says so."""
    from dfserve.export.pipeline import BuildOptions, resolve_batching
    from dfserve.export.policy import CPU_BATCHING

    batching = resolve_batching(BuildOptions(out=Path("unused"), precision=precision, target=target))  # type: ignore[arg-type]
    expected = CPU_BATCHING[precision]  # type: ignore[index]
    assert batching == expected and batching.preferred_batch_sizes == ()
    spec = SPEC.model_copy(update={"batching": batching, "precision": precision})
    engine = configs.engine_config(spec, target)
    assert engine.max_batch_size == expected.max_batch_size
    assert engine.dynamic_batching.max_queue_delay_microseconds == expected.max_queue_delay_us
    assert list(engine.dynamic_batching.preferred_batch_size) == []
    assert engine.instance_group[0].count == expected.engine_instances
    assert configs.preprocess_config(spec).instance_group[0].count == expected.preprocess_instances
    threads = (
        engine.parameters["intra_op_thread_count"].string_value if "intra_op_thread_count" in engine.parameters else ""
    )
    if target == "container":  # Triton's ONNX Runtime backend reads its own parameter
        assert threads == (str(expected.engine_threads) if expected.engine_threads else "")
    else:  # the python backend reads the embedded spec
        assert threads == "" and configs.spec_from_config(engine).batching.engine_threads == expected.engine_threads


def test_explicit_batching_overrides_only_what_it_names() -> None:
    from dfserve.export.pipeline import BuildOptions, resolve_batching
    from dfserve.export.policy import CPU_BATCHING
    from dfserve.spec.model import Batching

    opts = BuildOptions(out=Path("unused"), precision="int8", batching_overrides={"max_batch_size": 3})
    assert resolve_batching(opts) == CPU_BATCHING["int8"].model_copy(update={"max_batch_size": 3})
    # PyTorch keeps the generic defaults, TensorRT those with the GPU max batch (and the GPU policy on top); the CPU
    # table is for ONNX Runtime
    gpu = BuildOptions(out=Path("unused"), target="tensorrt")
    assert resolve_batching(gpu) == gpu.gpu.for_gpu(Batching(max_batch_size=64))
    assert resolve_batching(BuildOptions(out=Path("unused"), engine="torch")) == Batching()


def test_build_command_line_passes_only_the_flags_given() -> None:
    from dfserve.cli import build_parser
    from dfserve.export.cli import batching_from_args

    args = build_parser().parse_args(["build", "--precision", "int8", "--engine-threads", "1"])
    assert batching_from_args(args) == {"engine_threads": 1}
    args = build_parser().parse_args(["build", "--max-batch-size", "4", "--preferred-batch-sizes", "2,8"])
    assert batching_from_args(args) == {
        "max_batch_size": 4,
        "preferred_batch_sizes": (2,),
        "preprocess_max_batch_size": 4,
    }


def test_engine_threads_reach_the_onnxruntime_backend(tmp_path: Path) -> None:
    spec = SPEC.model_copy(
        update={"batching": SPEC.batching.model_copy(update={"engine_threads": 1, "engine_inter_op_threads": 2})}
    )
    cfg = configs.engine_config(spec, "container")
    assert cfg.parameters["intra_op_thread_count"].string_value == "1"
    assert cfg.parameters["inter_op_thread_count"].string_value == "2"
    assert "intra_op_thread_count" not in configs.engine_config(SPEC, "container").parameters

"""`config.pbtxt` for each served model, built through Triton's own `ModelConfig` protobuf.

Each config is assembled as a plain dict in small steps, loaded with `json_format.ParseDict` (so Triton's
schema rejects a misspelt field or a wrong enum here, at build time, not when the server starts) and written
with `text_format`. `read_config` parses a file back, so tests check what the server will read.

Every value comes from the `ModelSpec`: tensor and model names, input size, label count, batch sizes,
instance counts; the `tensorrt` target adds the CUDA graphs of `dfserve.spec.model.GpuServing` (the build has already
folded that policy's instance counts into the spec's batching, see `GpuServing.for_gpu`). The spec itself is
embedded as the parameter `dfserve_spec`, which is how backends and clients learn the policy without a side channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from dfserve.spec.model import SPEC_PARAMETER, GpuServing, ModelSpec
from dfserve.spec.names import (
    CONFIG_FILENAME,
    LABELS_FILENAME,
    ONNX_FILENAME,
    PLAN_FILENAME,
    WARMUP_IMAGE,
)

Target = Literal["python", "container", "tensorrt"]
TARGETS: tuple[Target, ...] = ("python", "container", "tensorrt")


def _dynamic_batching(spec: ModelSpec, max_batch: int, preferred: bool = True) -> dict[str, Any]:
    b = spec.batching
    batching: dict[str, Any] = {"max_queue_delay_microseconds": b.max_queue_delay_us}
    if preferred and (sizes := b.preferred_for(max_batch)):
        batching["preferred_batch_size"] = list(sizes)
    batching["default_queue_policy"] = queue_policy(spec)
    return batching


def queue_policy(spec: ModelSpec) -> dict[str, Any]:
    """Load shedding for a model that batches (Triton's `ModelQueuePolicy`): at most `Batching.max_queue_size`
    requests wait (0: unbounded), and with `queue_timeout_us` a request that waited that long is refused (REJECT)
    rather than run late. Clients cannot lengthen their own timeout."""
    b = spec.batching
    b.check_queue_bound()  # also for a Batching made by model_copy, which skips validation
    return {
        "timeout_action": "REJECT",
        "default_timeout_microseconds": b.queue_timeout_us,
        "allow_timeout_override": False,
        "max_queue_size": b.max_queue_size,
    }


def _onnxruntime_threads(spec: ModelSpec) -> dict[str, Any]:
    """The thread split for Triton's ONNX Runtime backend (its own parameter names); absent means its default."""
    b = spec.batching
    counts = {"intra_op_thread_count": b.engine_threads, "inter_op_thread_count": b.engine_inter_op_threads}
    return {key: {"string_value": str(n)} for key, n in counts.items() if n}


def _common(spec: ModelSpec, name: str, max_batch: int, preferred: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "max_batch_size": max_batch,
        "version_policy": {"latest": {"num_versions": 1}},
        "dynamic_batching": _dynamic_batching(spec, max_batch, preferred),
        "parameters": {SPEC_PARAMETER: {"string_value": spec.model_dump_json()}},
    }


def _pixels_dims(spec: ModelSpec) -> list[int]:
    h, w = spec.input_hw
    return [3, h, w]


def _scores_dims(spec: ModelSpec) -> list[int]:
    return [len(spec.labels.names)]


def cuda_graphs(spec: ModelSpec, gpu: GpuServing) -> dict[str, Any]:
    """`optimization.cuda` for Triton's TensorRT backend: a CUDA graph for every batch size 1..max_batch_size. Each
    graph spec has a `graph_lower_bound`, so the backend runs the graph for every batch between the bound and the
    spec's size (without a bound it uses a graph only for exactly that size: batches of 3, 5-7, 9-15... ran
    without one); `GpuServing.graph_ranges` chooses the sizes. The pixels shape is spelled out in both (the
    backend's `graph_spec` takes the input dims without the batch dimension)."""
    pixels = {spec.tensors.pixels: {"dim": _pixels_dims(spec)}}
    return {
        "graphs": True,
        "graph_spec": [
            {"batch_size": size, "input": pixels, "graph_lower_bound": {"batch_size": low, "input": pixels}}
            for low, size in gpu.graph_ranges(spec.batching.max_batch_size)
        ],
    }


def engine_config(spec: ModelSpec, target: Target, gpu: GpuServing | None = None) -> model_config_pb2.ModelConfig:
    """The engine `vit`: UINT8 pixels [N,3,H,W] -> FP32 scores [N,K].

    `tensorrt` never declares preferred batch sizes (they would send a batch as soon as one is reached, and the
    engine has one profile) and captures CUDA graphs (`gpu`, default `GpuServing()`)."""
    t = spec.tensors
    max_batch = spec.batching.max_batch_size
    cfg = _common(spec, spec.models.engine, max_batch, preferred=target != "tensorrt")
    cfg["input"] = [{"name": t.pixels, "data_type": "TYPE_UINT8", "dims": _pixels_dims(spec)}]
    cfg["output"] = [{"name": t.scores, "data_type": "TYPE_FP32", "dims": _scores_dims(spec)}]
    count = spec.batching.engine_instances
    if target == "python":
        cfg["backend"] = "python"
        cfg["instance_group"] = [{"count": count, "kind": "KIND_CPU"}]
    elif target == "container":
        cfg["platform"] = "onnxruntime_onnx"
        cfg["default_model_filename"] = ONNX_FILENAME
        cfg["instance_group"] = [{"count": count}]  # KIND_AUTO: the GPU where there is one, else the CPU
        cfg["parameters"].update(_onnxruntime_threads(spec))
    elif target == "tensorrt":
        cfg["platform"] = "tensorrt_plan"
        cfg["default_model_filename"] = PLAN_FILENAME
        cfg["instance_group"] = [{"count": count, "kind": "KIND_GPU"}]
        cfg["optimization"] = {"cuda": cuda_graphs(spec, gpu or GpuServing())}
    else:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    warm_batches = sorted({1, max_batch})
    cfg["model_warmup"] = [
        {
            "name": f"random_batch_{b}",
            "batch_size": b,
            "inputs": {t.pixels: {"data_type": "TYPE_UINT8", "dims": _pixels_dims(spec), "random_data": True}},
        }
        for b in warm_batches
    ]
    return _parse(cfg)


def preprocess_config(spec: ModelSpec) -> model_config_pb2.ModelConfig:
    """`preprocess` (Python backend): BYTES image [N,1] -> UINT8 pixels [N,3,H,W]."""
    t = spec.tensors
    max_batch = spec.batching.preprocess_max_batch_size
    cfg = _common(spec, spec.models.preprocess, max_batch)
    cfg["backend"] = "python"
    cfg["input"] = [{"name": t.image, "data_type": "TYPE_STRING", "dims": [1]}]
    cfg["output"] = [{"name": t.pixels, "data_type": "TYPE_UINT8", "dims": _pixels_dims(spec)}]
    cfg["instance_group"] = [{"count": spec.batching.preprocess_instances, "kind": "KIND_CPU"}]
    cfg["model_warmup"] = [
        {
            "name": "sample_jpeg",
            "batch_size": 1,
            "inputs": {t.image: {"data_type": "TYPE_STRING", "dims": [1], "input_data_file": WARMUP_IMAGE}},
        }
    ]
    return _parse(cfg)


def ensemble_config(spec: ModelSpec) -> model_config_pb2.ModelConfig:
    """`detector`: image -> preprocess -> vit -> scores, with a labels file for the classification extension."""
    t, m = spec.tensors, spec.models
    internal = f"_{t.pixels}"
    cfg: dict[str, Any] = {
        "name": m.ensemble,
        "platform": "ensemble",
        "max_batch_size": min(spec.batching.max_batch_size, spec.batching.preprocess_max_batch_size),
        "version_policy": {"latest": {"num_versions": 1}},
        "parameters": {SPEC_PARAMETER: {"string_value": spec.model_dump_json()}},
        "input": [{"name": t.image, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [
            {"name": t.scores, "data_type": "TYPE_FP32", "dims": _scores_dims(spec), "label_filename": LABELS_FILENAME}
        ],
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": m.preprocess,
                    "model_version": -1,
                    "input_map": {t.image: t.image},
                    "output_map": {t.pixels: internal},
                },
                {
                    "model_name": m.engine,
                    "model_version": -1,
                    "input_map": {t.pixels: internal},
                    "output_map": {t.scores: t.scores},
                },
            ]
        },
    }
    return _parse(cfg)


def decode_detector_config(spec: ModelSpec) -> model_config_pb2.ModelConfig:
    """`detector` of a `--decode gpu --engine torch` build: one Python-backend model, BYTES image [N,1] -> FP32
    scores [N,K] with the labels file, decoding on the engine's device (`backends/decode_engine.py`). Its batch is
    the engine's, its instances the engine's (each holds the classifier on the device)."""
    t = spec.tensors
    max_batch = spec.batching.max_batch_size
    cfg = _common(spec, spec.models.ensemble, max_batch)
    cfg["backend"] = "python"
    cfg["input"] = [{"name": t.image, "data_type": "TYPE_STRING", "dims": [1]}]
    cfg["output"] = [
        {"name": t.scores, "data_type": "TYPE_FP32", "dims": _scores_dims(spec), "label_filename": LABELS_FILENAME}
    ]
    cfg["instance_group"] = [{"count": spec.batching.engine_instances, "kind": "KIND_CPU"}]
    return _parse(cfg)


def _parse(cfg: dict[str, Any]) -> model_config_pb2.ModelConfig:
    return json_format.ParseDict(cfg, model_config_pb2.ModelConfig())


def write_config(cfg: model_config_pb2.ModelConfig, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CONFIG_FILENAME
    path.write_text(text_format.MessageToString(cfg))
    return path


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse a `config.pbtxt` (a file or a model folder) with Triton's schema."""
    path = path / CONFIG_FILENAME if path.is_dir() else path
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def spec_from_config(cfg: model_config_pb2.ModelConfig) -> ModelSpec:
    return ModelSpec.from_json(cfg.parameters[SPEC_PARAMETER].string_value)

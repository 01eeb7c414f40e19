"""TensorRT engines for the `vit` model, built strongly typed from the FP16 ONNX graph that the build has already
proven, and the checks that keep a plan from being served where it cannot run.

Precision. The build first writes the FP16 ONNX graph exactly as `--precision fp16` does for ONNX Runtime
(`dfserve.export.precision.to_fp16`: ONNX Runtime's float16 converter with LayerNormalization and the final
sigmoid/softmax in FP32 behind explicit casts, attention FP16 end to end so that TensorRT can fuse it) and gates it
on the CPU against the Transformers pipeline and the FP32 graph. TensorRT then builds *that* graph with
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: every tensor keeps the type the graph gives it, so the precision
the engine computes in is the precision that was measured. Strongly typed networks take no precision flags
(``BuilderFlag.FP16``) and no per-layer precision or output types; TensorRT refuses them. An FP32 engine is the same
call on the FP32 graph.

Why not the weakly typed build this replaced (FP32 ONNX + ``BuilderFlag.FP16`` + layers pinned to FP32 under
``OBEY_PRECISION_CONSTRAINTS``): the pinned precisions were chosen by TensorRT layer type after its own fusions,
so what ran on the GPU was never the graph whose drift had been measured; pinning every Softmax forced the
attention probabilities (32×6×577² values per layer at batch 32) through memory in FP32 and defeated fused
attention; pinning LayerNormalization only added reformats. TensorRT 10.12 deprecates weak typing and
TensorRT 11 builds strongly typed networks only (its ``STRONGLY_TYPED`` flag is kept but ignored); a TensorRT
whose ``NetworkDefinitionCreationFlag`` lacks the member is handled by its major version (`network_flags`).

The engine's own record. The builder runs with ``ProfilingVerbosity.DETAILED``; after the build the plan is
deserialised, an execution context is set to the optimisation profile's `opt` shape (with dynamic shapes the
inspector reports formats only for a context's concrete shapes) and the engine inspector's JSON
(``get_engine_information(LayerInformationFormat.JSON)``) is summarised by `summarize_engine_information`: layers
per output data type, the layers that write FP32, tactics and layer types, and whether attention was fused
(`dfserve.export.attention`: an FP16 engine whose attention is not fused fails the build unless
`allow_unfused_attention`). The summary goes into the plan's record and build_report.json, so the first GPU build
shows what TensorRT did.

A TensorRT plan is only valid for the TensorRT version and the GPU architecture it was built on; loading it
anywhere else fails deep inside Triton with a message about "magic tags" or "serialization". So every plan
gets a sidecar record (``model.plan.json``) and `check_engine_compatibility` compares it with the host before
anything tries to load the plan. The GPUs come from the CUDA runtime (`cuda_gpus`: the devices and the order
Triton sees, honouring CUDA_VISIBLE_DEVICES), with nvidia-smi as the fallback where cuda-python is not installed
(NVIDIA's Triton image, where `python -m dfserve.export.tensorrt check` runs before tritonserver).

What has run where -- said plainly, because it matters:

- TensorRT and CUDA cannot be installed on the development machine (no NVIDIA package index, no GPU).
  `build_engine` and `run_engine` have NOT run against the real `tensorrt` module. They are exercised end to end
  against a recording stand-in of the subset of the TensorRT 10 Python API and the cuda-python runtime bindings
  they call (tests/export/trt_standin.py), strict about enum member names, argument types and call order, with
  every name checked against NVIDIA's TensorRT 10 Python API documentation.
- Everything around them is pure Python and tested here: the missing-TensorRT message, `EngineOptions` and its
  agreement with the `ModelSpec`, the ONNX input check, the inspector summary on a sample of TensorRT's
  documented JSON, the compatibility record and check, the GPU probes, and the parity gate.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dfserve.engine.gpus import GpuInfo, local_gpus
from dfserve.engine.records import EngineInfo, write_atomic, write_engine_record
from dfserve.engine.tensorrt import require_tensorrt
from dfserve.errors import BuildError, EngineBuildError, ParityError, TensorRTUnavailableError
from dfserve.export.attention import attention_fusion, attention_sites, check_attention
from dfserve.spec.model import GpuServing, ModelSpec
from dfserve.spec.names import TIMING_CACHE_ENV

log = logging.getLogger(__name__)


FP16_MAX_ABS_DIFF = 1e-2
"""Largest |Δscore| the FP16 engine may show against the FP32 ONNX reference (issue 6)."""
FP16_MIN_TOP1_AGREEMENT = 0.995


# ---------------------------------------------------------------------------------------------------------------
# Options


class EngineOptions(BaseModel):
    """How the engine is built. `from_spec` takes the batch sizes from the one `ModelSpec`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    precision: Literal["fp16", "fp32"] = "fp16"
    min_batch: int = Field(default=1, ge=1)
    opt_batch: int = Field(ge=1)
    """The batch TensorRT tunes its kernels for."""
    max_batch: int = Field(ge=1)
    workspace_bytes: int = Field(default=4 << 30, ge=1 << 20)
    timing_cache: Path | None = None
    """Loaded when present and saved after the build, so rebuilds skip most kernel timing."""
    optimization_level: int = Field(default=GpuServing().builder_optimization_level, ge=0, le=5)
    """TensorRT's builder optimisation level (`GpuServing.builder_optimization_level`)."""
    hardware_compatibility: Literal["none", "ampere_plus"] = "none"
    """`ampere_plus` builds a plan that loads on any GPU of compute capability 8.0 or newer (slightly slower)."""
    allow_unfused_attention: bool = False
    """An FP16 engine whose attention TensorRT did not fuse fails the build unless this is set
    (`dfserve.export.attention`)."""

    @model_validator(mode="after")
    def _check_order(self) -> EngineOptions:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"batch sizes must satisfy min <= opt <= max, got min={self.min_batch} opt={self.opt_batch} "
                f"max={self.max_batch}"
            )
        return self

    @classmethod
    def from_spec(cls, spec: ModelSpec, gpu: GpuServing | None = None, **overrides: Any) -> EngineOptions:
        """Options whose profile covers every batch Triton may send `vit`.

        The optimal batch is the one the dynamic batcher forms under load (`GpuServing.opt_batch`: with no preferred
        sizes, a loaded batcher fills `max_batch_size`); the optimisation level is `GpuServing`'s. The timing cache
        defaults to ``$DFSERVE_TRT_TIMING_CACHE`` (the compose `build` service points it at a volume, so rebuilds on
        the same GPU skip kernel timing).
        """
        gpu = gpu or GpuServing()
        batching = spec.batching
        values: dict[str, Any] = {
            "min_batch": 1,
            "opt_batch": gpu.opt_batch(batching),
            "max_batch": batching.max_batch_size,
            "optimization_level": gpu.builder_optimization_level,
        }
        if os.environ.get(TIMING_CACHE_ENV):
            values["timing_cache"] = Path(os.environ[TIMING_CACHE_ENV])
        values.update(overrides)
        try:
            options = cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
            raise BuildError(f"invalid TensorRT engine options: {problems}") from exc
        options.check_against(spec)
        return options

    def check_against(self, spec: ModelSpec) -> None:
        """The profile must accept what Triton sends: batch 1 up to the config's max_batch_size."""
        if self.min_batch != 1:
            raise BuildError(f"engine min batch is {self.min_batch}, but Triton sends single requests (batch 1)")
        if self.max_batch < spec.batching.max_batch_size:
            raise BuildError(
                f"engine max batch {self.max_batch} is below the model's max_batch_size "
                f"{spec.batching.max_batch_size}: Triton would send batches the engine cannot run"
            )

    def shapes(self, spec: ModelSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of the pixels input: [b, 3, H, W]."""
        h, w = spec.input_hw
        return (self.min_batch, 3, h, w), (self.opt_batch, 3, h, w), (self.max_batch, 3, h, w)


# ---------------------------------------------------------------------------------------------------------------
# The ONNX graph must be the one the spec describes (checked before TensorRT sees it)


def check_onnx_input(onnx_path: Path, spec: ModelSpec) -> None:
    """Fail early, naming the mismatch, when the ONNX input is not `pixels` [N, 3, H, W] of the spec."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise EngineBuildError(f"cannot read ONNX model {onnx_path}: {exc}") from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    name = spec.tensors.pixels
    if name not in inputs:
        raise EngineBuildError(f"ONNX model {onnx_path} has no input {name!r} (inputs: {sorted(inputs)})")
    dims = inputs[name].type.tensor_type.shape.dim
    shape: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    h, w = spec.input_hw
    if len(shape) != 4 or shape[1:] != [3, h, w] or isinstance(shape[0], int):
        raise EngineBuildError(
            f"ONNX input {name!r} has shape {shape}; the engine needs [batch, 3, {h}, {w}] with a dynamic batch"
        )


# ---------------------------------------------------------------------------------------------------------------
# The engine inspector's JSON, summarised (pure: tested on a sample of TensorRT's documented format)

DTYPE_WORDS = {
    "fp32": "fp32",
    "float": "fp32",
    "fp16": "fp16",
    "half": "fp16",
    "bf16": "bf16",
    "fp8": "fp8",
    "int8": "int8",
    "uint8": "uint8",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
    "int4": "int4",
    "fp4": "fp4",
}
"""Words of the inspector's "Format/Datatype" strings ("Row major linear FP16 format", "Channel major FP16 format
where channel % 4 == 0", "Thirty-two wide channel vectorized row major Int8 format.", "Float") and the data type
each names. A string with none of them ("N/A due to dynamic shapes") is "unknown"."""
TACTICS_LISTED = 20


def tensor_dtype(format_datatype: str) -> str:
    """The data type a "Format/Datatype" string names, or "unknown"."""
    words = [w.lower() for w in re.findall(r"[A-Za-z]+[0-9]*", format_datatype)]
    found = [DTYPE_WORDS[w] for w in words if w in DTYPE_WORDS]
    return found[0] if found else "unknown"


def summarize_engine_information(text: str) -> dict[str, Any]:
    """Counts of layers per output data type, the layers writing FP32, layer types and tactics, from
    ``EngineInspector.get_engine_information(LayerInformationFormat.JSON)``.

    The JSON is ``{"Layers": [...], "Bindings": [...]}``; with ``ProfilingVerbosity.DETAILED`` each layer is an
    object with "Name", "LayerType", "Inputs"/"Outputs" (each with "Name", "Dimensions", "Format/Datatype"),
    "TacticName" (for kernels that have one) and "TacticValue"; at lower verbosity a layer is only its name, which
    is reported as such (``detailed: false``) rather than guessed at. A layer whose outputs have several types is
    counted under them joined by "+". Unreadable JSON raises ValueError naming the problem.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the engine inspector's output is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise ValueError("the engine inspector's JSON has no 'Layers' list")
    layers = data["Layers"]
    detailed = all(isinstance(layer, dict) for layer in layers)
    summary: dict[str, Any] = {"layers": len(layers), "detailed": detailed, "bindings": list(data.get("Bindings", []))}
    if not detailed:
        return summary
    by_dtype: Counter[str] = Counter()
    types: Counter[str] = Counter()
    tactics: Counter[str] = Counter()
    fp32: list[str] = []
    for layer in layers:
        outputs = [o for o in layer.get("Outputs", []) if isinstance(o, dict)]
        dtypes = sorted({tensor_dtype(str(o.get("Format/Datatype", ""))) for o in outputs}) or ["none"]
        dtype = "+".join(dtypes)
        by_dtype[dtype] += 1
        if "fp32" in dtypes:
            fp32.append(str(layer.get("Name", "?")))
        types[str(layer.get("LayerType", "?"))] += 1
        tactic = layer.get("TacticName") or layer.get("TacticValue")
        if tactic:
            tactics[str(tactic)] += 1
    summary.update(
        {
            "by_output_dtype": dict(sorted(by_dtype.items())),
            "fp32_layers": fp32,
            "layer_types": dict(types.most_common()),
            "tactics": dict(tactics.most_common(TACTICS_LISTED)),
            "distinct_tactics": len(tactics),
        }
    )
    return summary


# ---------------------------------------------------------------------------------------------------------------
# The compatibility record


# ---------------------------------------------------------------------------------------------------------------
# Probing the host (no torch: the SDK and `dfserve serve` call these)


# ---------------------------------------------------------------------------------------------------------------
# FP16 parity gate


@dataclass(frozen=True)
class ParityFigures:
    max_abs_diff: float
    top1_agreement: float
    images: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fp16_parity(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    max_abs_diff: float = FP16_MAX_ABS_DIFF,
    min_top1_agreement: float = FP16_MIN_TOP1_AGREEMENT,
) -> ParityFigures:
    """Compare engine scores [N, K] with the FP32 ONNX reference; raise `ParityError` naming every failure.

    Non-finite engine scores (the symptom of an FP16 overflow) fail the gate outright instead of slipping
    through a NaN comparison.
    """
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape or ref.ndim != 2 or ref.shape[0] == 0:
        raise ParityError(f"engine scores have shape {got.shape}, the reference {ref.shape}: expected equal [N, K]")
    bad = ~np.isfinite(got).all(axis=1)
    if bad.any():
        raise ParityError(f"engine returned non-finite scores for {int(bad.sum())} of {len(got)} parity images")
    figures = ParityFigures(
        max_abs_diff=float(np.abs(ref - got).max()),
        top1_agreement=float((ref.argmax(axis=1) == got.argmax(axis=1)).mean()),
        images=len(ref),
    )
    failures = []
    if figures.max_abs_diff > max_abs_diff:
        failures.append(f"max |Δscore| {figures.max_abs_diff:.3g} > {max_abs_diff:g}")
    if figures.top1_agreement < min_top1_agreement:
        failures.append(f"top-1 agreement {figures.top1_agreement:.2%} < {min_top1_agreement:.1%}")
    if failures:
        raise ParityError(
            f"{'; '.join(failures)} against the FP32 ONNX reference on {figures.images} images: "
            "the FP16 engine is not accurate enough (try --precision fp32)"
        )
    return figures


# ---------------------------------------------------------------------------------------------------------------
# The TensorRT calls (not run on the development machine: see the module docstring)


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def _member(trt: ModuleType, enum: str, name: str) -> Any:
    """``trt.<enum>.<name>``, or an `EngineBuildError` naming the TensorRT version that lacks it (the build then stops
    with one line instead of an AttributeError from deep inside)."""
    owner = getattr(trt, enum, None)
    value = getattr(owner, name, None) if owner is not None else None
    if value is None:
        raise EngineBuildError(
            f"TensorRT {getattr(trt, '__version__', '?')} has no {enum}.{name}: dfserve builds with the TensorRT 10 "
            "Python API (use NVIDIA's TensorRT container of the release in .env)"
        )
    return value


def network_flags(trt: ModuleType) -> int:
    """`create_network` flags of a strongly typed network.

    TensorRT 10 needs ``1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)``. TensorRT 11 builds strongly
    typed networks only: it keeps the member for compatibility (ignored), and a later major may drop it, so
    from 11 on a missing member means 0. Before 10 (no strongly typed networks with this API) the build stops.
    """
    major = _major(str(getattr(trt, "__version__", "0")))
    owner = getattr(trt, "NetworkDefinitionCreationFlag", None)
    flag = getattr(owner, "STRONGLY_TYPED", None) if owner is not None else None
    if flag is not None:
        return 1 << int(flag)
    if major >= 11:
        return 0
    raise EngineBuildError(
        f"TensorRT {getattr(trt, '__version__', '?')} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED: "
        "dfserve builds strongly typed engines with TensorRT 10 or newer"
    )


def _inspect(
    trt: ModuleType, logger: Any, plan: bytes, spec: ModelSpec, options: EngineOptions, sites: int
) -> dict[str, Any]:
    """The engine inspector's JSON for the `opt` shape, summarised, with whether attention was fused (an execution
    context with concrete shapes, because a dynamic-shape engine's formats read "N/A due to dynamic shapes" without
    one)."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineBuildError("TensorRT could not deserialise the engine it has just built")
    context = engine.create_execution_context()
    context.set_input_shape(spec.tensors.pixels, options.shapes(spec)[1])
    inspector = engine.create_engine_inspector()
    try:
        inspector.execution_context = context  # TensorRT 10 and 11
    except AttributeError:
        inspector.context = context  # the name in TensorRT 8's Python API
    text = str(inspector.get_engine_information(_member(trt, "LayerInformationFormat", "JSON")))
    summary = summarize_engine_information(text)
    summary["attention"] = attention_fusion(json.loads(text)["Layers"], sites)
    return summary


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    spec: ModelSpec,
    options: EngineOptions,
    gpu: GpuInfo | None = None,
) -> EngineInfo:
    """Build `plan_path` (and its record) from `onnx_path` as a strongly typed network: the FP16 ONNX graph the
    build has proven for an FP16 engine, the FP32 graph for an FP32 one. One profile for `spec.tensors.pixels`.

    `gpu` defaults to the first local GPU; the record is what `check_engine_compatibility` reads later.
    """
    options.check_against(spec)
    check_onnx_input(onnx_path, spec)
    sites = attention_sites(onnx_path)
    trt = require_tensorrt()
    gpu = gpu or next(iter(local_gpus()), None)
    if gpu is None:
        raise TensorRTUnavailableError("no NVIDIA GPU is visible to the CUDA runtime: engines build on a GPU")
    version = str(trt.__version__)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(_member(trt, "MemoryPoolType", "WORKSPACE"), options.workspace_bytes)
    config.builder_optimization_level = options.optimization_level
    config.profiling_verbosity = _member(trt, "ProfilingVerbosity", "DETAILED")
    if options.hardware_compatibility == "ampere_plus":
        config.hardware_compatibility_level = _member(trt, "HardwareCompatibilityLevel", "AMPERE_PLUS")
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.tensors.pixels, *options.shapes(spec))
    config.add_optimization_profile(profile)

    cache_file = options.timing_cache
    cache_bytes = cache_file.read_bytes() if cache_file and cache_file.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), False):
        log.warning("timing cache %s is from another GPU or TensorRT: starting a new one", cache_file)
        config.set_timing_cache(config.create_timing_cache(b""), False)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise EngineBuildError(f"TensorRT {version} failed to build an engine from {onnx_path} (see its log above)")
    plan = bytes(serialized)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(plan)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_file, bytes(config.get_timing_cache().serialize()))
    try:
        layers = _inspect(trt, logger, plan, spec, options, sites)
    except (BuildError, AttributeError, TypeError, ValueError, RuntimeError) as exc:
        # the record is for people: the plan is built and will be gated; a changed inspector must not fail it
        log.warning("TensorRT %s: could not record the engine's layers: %s", version, exc)
        layers = {"error": f"{type(exc).__name__}: {exc}"}
    if layers.get("by_output_dtype"):
        log.info("engine layers by output type %s", layers["by_output_dtype"])
    attention = layers.get("attention") or attention_fusion([], sites)

    h, w = spec.input_hw
    info = EngineInfo(
        tensorrt_version=version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        hardware_compatibility=options.hardware_compatibility,
        precision=options.precision,
        min_batch=options.min_batch,
        opt_batch=options.opt_batch,
        max_batch=options.max_batch,
        input_shape=(3, h, w),
        build_seconds=round(seconds, 3),
        plan_bytes=len(plan),
        timing_cache=str(cache_file) if cache_file else None,
        strongly_typed=True,
        optimization_level=options.optimization_level,
        gpu_uuid=gpu.uuid,
        layers=layers,
        attention=str(attention["status"]),
    )
    write_engine_record(plan_path, info)
    check_attention(attention, options.precision, options.allow_unfused_attention)
    return info

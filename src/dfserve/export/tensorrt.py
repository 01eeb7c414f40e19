"""TensorRT FP16 engines for the `vit` model, and the checks that keep a plan from being served where it cannot run.

A TensorRT plan is only valid for the TensorRT version and the GPU architecture it was built on; loading it
anywhere else fails deep inside Triton with a message about "magic tags" or "serialization". So every plan
gets a sidecar record (``model.plan.json``) and `check_engine_compatibility` compares it with the host before
anything tries to load the plan.

What has run where -- said plainly, because it matters:

- TensorRT cannot be installed on the development machine (no NVIDIA package index, no GPU). The functions
  that call TensorRT or CUDA -- `build_engine`, `pin_fp32_layers`, `run_engine` -- have NOT been run here.
  They follow the TensorRT 10 Python API (explicit-batch networks, ``build_serialized_network``,
  ``set_tensor_address`` / ``execute_async_v3``) and are kept small so that their first GPU run is easy to
  review. `docker compose run --rm build` runs them inside NVIDIA's TensorRT container.
- Everything around them is pure Python and tested here: the missing-TensorRT message, `EngineOptions` and its
  agreement with the `ModelSpec`, the ONNX input check, the choice of layers kept in FP32 (on plain layer-type
  names), the compatibility record and check, the version/GPU probes' parsing, and the FP16 parity gate.

Precision: the build uses a *weakly typed* network with ``BuilderFlag.FP16`` and pins LayerNorm, Softmax and
the reduce/pow/sqrt ops of decomposed LayerNorms to FP32 (``OBEY_PRECISION_CONSTRAINTS``). ViTs carry
activation outliers of several hundred; squaring them for the variance overflows FP16's 65504 and the
LayerNorm output collapses. A strongly typed network would be the alternative, but it takes its precisions
from the ONNX graph, which would then need a separate mixed-precision ONNX export; the one FP32 ONNX that
ONNX Runtime serves (and that the parity reference runs) is kept as the single source. TensorRT 10.12+
deprecates weak typing; when the pinned Triton release moves past it, switch to a strongly typed network built
from an ONNX converted with the same `keeps_fp32` policy.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dfserve.config import ModelSpec
from dfserve.export.errors import BuildError, ParityError
from dfserve.names import TIMING_CACHE_ENV

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".json"
"""The compatibility record sits next to the plan: ``model.plan`` -> ``model.plan.json``."""
RECORD_FORMAT = 1

FP16_MAX_ABS_DIFF = 1e-2
"""Largest |Δscore| the FP16 engine may show against the FP32 ONNX reference (issue 6)."""
FP16_MIN_TOP1_AGREEMENT = 0.995

INSTALL_HINT = (
    "TensorRT is not installed: build engines on a GPU host, e.g. `docker compose run --rm build` "
    "(NVIDIA's TensorRT container of the same release as the Triton image), or pip install 'dfserve[gpu]' "
    "on a host with an NVIDIA driver"
)
REBUILD_HINT = "rebuild with `dfserve build --engine tensorrt` on this host"


class TensorRTUnavailableError(BuildError):
    """TensorRT (or the CUDA runtime bindings) is not importable on this host."""


class EngineBuildError(BuildError):
    """TensorRT refused the ONNX graph or failed to build the plan."""


class EngineCompatibilityError(BuildError):
    """A plan was built for another TensorRT version or GPU than this host has."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder and os.replace it: two builds sharing the timing-cache
    volume, or a build killed mid-write, never leave a truncated cache for the next build to load."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def require_tensorrt() -> ModuleType:
    """Import `tensorrt`, or stop with one message saying where engines can be built."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:  # also OSError-like failures of a broken install surface as ImportError
        raise TensorRTUnavailableError(f"{INSTALL_HINT} ({exc})") from exc


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
    optimization_level: int = Field(default=3, ge=0, le=5)
    """TensorRT's builder optimisation level: 3 is its default; 5 searches longest."""
    hardware_compatibility: Literal["none", "ampere_plus"] = "none"
    """`ampere_plus` builds a plan that loads on any GPU of compute capability 8.0 or newer (slightly slower)."""

    @model_validator(mode="after")
    def _check_order(self) -> EngineOptions:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"batch sizes must satisfy min <= opt <= max, got min={self.min_batch} opt={self.opt_batch} "
                f"max={self.max_batch}"
            )
        return self

    @classmethod
    def from_spec(cls, spec: ModelSpec, **overrides: Any) -> EngineOptions:
        """Options whose profile covers every batch Triton may send `vit`.

        The optimal batch is the largest preferred batch size where there are any (under load the dynamic
        batcher forms those), else the max batch size, which a loaded batcher fills. The timing cache defaults to
        ``$DFSERVE_TRT_TIMING_CACHE`` (the
        compose `build` service points it at a volume, so rebuilds on the same GPU skip kernel timing).
        """
        batching = spec.batching
        values: dict[str, Any] = {
            "min_batch": 1,
            "opt_batch": max(batching.preferred_for(batching.max_batch_size), default=batching.max_batch_size),
            "max_batch": batching.max_batch_size,
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
# Which layers stay in FP32 (plain names, so the policy is testable without TensorRT)

FP32_LAYER_TYPES = frozenset({"NORMALIZATION", "SOFTMAX", "REDUCE"})
"""TensorRT layer types computed in FP32: LayerNorm (opset 17+ imports as NORMALIZATION), Softmax, and every
reduction (in a ViT they are the mean and variance of decomposed LayerNorms)."""
FP32_LAYER_OPS = frozenset({("ELEMENTWISE", "POW"), ("UNARY", "SQRT")})
"""The element-wise parts of a decomposed LayerNorm that overflow or lose range in FP16: x² and √var."""
DECOMPOSED_NORM_SEEDS = frozenset({"REDUCE", "ELEMENTWISE", "UNARY"})
"""Pinned layers whose element-wise consumers are pinned too: in a decomposed LayerNorm, `var + eps`,
`x - mean` and `d / std` sit between the reductions, and casting `var` back to FP16 would overflow again."""
FLOAT_TYPES = frozenset({"FLOAT", "HALF", "BF16"})


@dataclass(frozen=True)
class LayerDesc:
    """A network layer reduced to plain names: TensorRT's ``LayerType`` and operation enum names, the output
    data types, and the indices of the layers producing its inputs (layers come in topological order)."""

    name: str
    type: str
    op: str | None = None
    output_dtypes: tuple[str, ...] = ("FLOAT",)
    inputs: tuple[int, ...] = ()


def keeps_fp32(layer: LayerDesc) -> bool:
    """Whether this layer is FP32 by its own kind. Layers on integer shape tensors are left alone."""
    return _is_float(layer) and (layer.type in FP32_LAYER_TYPES or (layer.type, layer.op) in FP32_LAYER_OPS)


def _is_float(layer: LayerDesc) -> bool:
    return bool(layer.output_dtypes) and all(d in FLOAT_TYPES for d in layer.output_dtypes)


def select_fp32_layers(layers: Sequence[LayerDesc]) -> list[int]:
    """Indices of the layers an FP16 build pins to FP32: `keeps_fp32` layers, plus the element-wise chain that
    follows a pinned reduction, power or square root (the rest of a decomposed LayerNorm, up to the next
    non-element-wise layer such as the following MatMul)."""
    pinned: list[int] = []
    chain: set[int] = set()
    for i, layer in enumerate(layers):
        if keeps_fp32(layer):
            pinned.append(i)
            if layer.type in DECOMPOSED_NORM_SEEDS:
                chain.add(i)
        elif layer.type in ("ELEMENTWISE", "UNARY") and _is_float(layer) and chain.intersection(layer.inputs):
            pinned.append(i)
            chain.add(i)
    return pinned


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
# The compatibility record


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str
    """"major.minor", e.g. "9.0"."""

    @property
    def sm(self) -> str:
        return "sm_" + self.compute_capability.replace(".", "")


@dataclass(frozen=True)
class EngineInfo:
    """What a built plan is, and where it can run. Stored as the plan's sidecar and in build_report.json."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    hardware_compatibility: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    input_shape: tuple[int, int, int]
    build_seconds: float
    plan_bytes: int
    fp32_layers: int
    timing_cache: str | None = None
    format: int = RECORD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineInfo:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["input_shape"] = tuple(known.get("input_shape", ()))
        return cls(**known)


def record_path(plan_path: Path) -> Path:
    return plan_path.with_name(plan_path.name + RECORD_SUFFIX)


def write_engine_record(plan_path: Path, info: EngineInfo) -> Path:
    path = record_path(plan_path)
    path.write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return path


def read_engine_record(path: Path) -> EngineInfo:
    try:
        return EngineInfo.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise EngineCompatibilityError(f"cannot read the engine record {path}: {exc}; {REBUILD_HINT}") from exc


def find_engine_records(location: Path) -> list[Path]:
    """Records for a plan file, a record file, or every plan under a folder (a model repository).

    A plan without its record is refused: nothing says where it may run.
    """
    location = Path(location)
    if location.is_file():
        if location.name.endswith(".plan" + RECORD_SUFFIX):
            return [location]
        plans = [location]
    elif location.is_dir():
        plans = sorted(location.rglob("*.plan"))
    else:
        raise EngineCompatibilityError(f"{location} does not exist")
    missing = [p for p in plans if not record_path(p).is_file()]
    if missing:
        raise EngineCompatibilityError(
            f"TensorRT plan {missing[0]} has no compatibility record ({record_path(missing[0]).name}); {REBUILD_HINT}"
        )
    return [record_path(p) for p in plans]


def _version_key(version: str) -> tuple[int, ...]:
    """major.minor.patch; the build number (a 4th field) does not change plan compatibility."""
    parts = []
    for part in version.strip().split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def _cc_key(cc: str) -> tuple[int, int]:
    major, _, minor = cc.strip().partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError as exc:
        raise EngineCompatibilityError(f"unreadable compute capability {cc!r}") from exc


def _gpu_compatible(record: EngineInfo, gpu: GpuInfo) -> bool:
    if record.hardware_compatibility == "ampere_plus":
        return _cc_key(gpu.compute_capability) >= (8, 0)
    return _cc_key(gpu.compute_capability) == _cc_key(record.compute_capability)


def check_engine_compatibility(
    location: Path,
    installed_tensorrt: str | None,
    gpus: Sequence[GpuInfo],
) -> None:
    """Refuse, in one sentence, a plan that this host's TensorRT or GPUs cannot load.

    `location` is a plan, its record, or a model repository (every plan below it is checked; a repository
    without plans passes). `installed_tensorrt` is the TensorRT version that will load the plan (the one
    Triton's TensorRT backend links), None when there is none; `gpus` are the GPUs it will run on.
    A different GPU model of the same compute capability loads (TensorRT only warns), so it is logged.
    """
    for path in find_engine_records(Path(location)):
        rec = read_engine_record(path)
        sm = GpuInfo(rec.gpu_name, rec.compute_capability).sm
        built = f"TensorRT {rec.tensorrt_version} on {rec.gpu_name} ({sm})"
        if rec.hardware_compatibility == "ampere_plus":
            built += " with Ampere+ hardware compatibility"
        if installed_tensorrt is None:
            raise EngineCompatibilityError(
                f"engine {path.with_suffix('')} was built for {built} but this host has no TensorRT: serve it "
                "with NVIDIA's Triton container of the same release, or build with `--target container` (ONNX)"
            )
        host_gpus = " / ".join(f"{g.name} ({g.sm})" for g in gpus) or "no GPU"
        host = f"TensorRT {installed_tensorrt} / {host_gpus}"
        same_trt = _version_key(installed_tensorrt) == _version_key(rec.tensorrt_version)
        if not gpus or not same_trt or not all(_gpu_compatible(rec, g) for g in gpus):
            raise EngineCompatibilityError(
                f"engine {path.with_suffix('')} was built for {built} but this host has {host}: {REBUILD_HINT}"
            )
        for g in gpus:
            if g.name != rec.gpu_name:
                log.warning("engine %s was built on %s and will run on %s: rebuild for best speed", path, built, g.name)


# ---------------------------------------------------------------------------------------------------------------
# Probing the host (no torch: the SDK and `dfserve serve` call these)


def decode_infer_lib_version(value: int) -> str:
    """`getInferLibVersion()` of libnvinfer: major*10000+minor*100+patch from TensorRT 10, *1000 before."""
    if value >= 100000:
        return f"{value // 10000}.{value // 100 % 100}.{value % 100}"
    return f"{value // 1000}.{value // 100 % 10}.{value % 100}"


def installed_tensorrt_version() -> str | None:
    """TensorRT's version from its Python module, or else from libnvinfer (Triton's container has only that)."""
    try:
        return str(importlib.import_module("tensorrt").__version__)
    except ImportError:
        pass
    candidates = ["libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"]
    candidates += sorted(str(p) for d in NVINFER_DIRS for p in Path(d).glob("libnvinfer.so.*"))
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.getInferLibVersion.restype = ctypes.c_int32
        return decode_infer_lib_version(int(lib.getInferLibVersion()))
    return None


NVINFER_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/opt/tritonserver/backends/tensorrt")
"""Where Triton's containers keep libnvinfer when it is not on the loader's path."""


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Lines of ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader``."""
    gpus = []
    for line in text.strip().splitlines():
        name, sep, cc = line.rpartition(",")
        if not sep or not name.strip():
            raise ValueError(f"unexpected nvidia-smi line {line!r}")
        gpus.append(GpuInfo(name=name.strip(), compute_capability=cc.strip()))
    return gpus


def local_gpus() -> list[GpuInfo]:
    """The GPUs this process may use (honouring CUDA_VISIBLE_DEVICES), empty when there is none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    cmd = [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        cmd.append(f"--id={visible}")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
        return parse_nvidia_smi(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("nvidia-smi could not list GPUs: %s", exc)
        return []


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


def pin_fp32_layers(trt: ModuleType, network: Any) -> list[str]:
    """Mark the layers `select_fp32_layers` picks as FP32 (precision and output types); returns their names."""
    subclass = {"ELEMENTWISE": trt.IElementWiseLayer, "UNARY": trt.IUnaryLayer, "REDUCE": trt.IReduceLayer}
    layers, descs = [], []
    producer: dict[str, int] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = layer.type.name
        op = None
        if kind in subclass:
            layer.__class__ = subclass[kind]  # how TensorRT's Polygraphy reaches a layer's `op`
            op = layer.op.name
        sources = (layer.get_input(j) for j in range(layer.num_inputs))
        inputs = tuple(producer[t.name] for t in sources if t is not None and t.name in producer)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        producer.update((t.name, i) for t in outputs)
        layers.append(layer)
        descs.append(LayerDesc(layer.name, kind, op, tuple(t.dtype.name for t in outputs), inputs))
    pinned = []
    for i in select_fp32_layers(descs):
        layers[i].precision = trt.float32
        for j in range(layers[i].num_outputs):
            layers[i].set_output_type(j, trt.float32)
        pinned.append(descs[i].name)
    return pinned


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    spec: ModelSpec,
    options: EngineOptions,
    gpu: GpuInfo | None = None,
) -> EngineInfo:
    """Build `plan_path` (and its record) from the FP32 ONNX export; one profile for `spec.tensors.pixels`.

    `gpu` defaults to the first local GPU; the record is what `check_engine_compatibility` reads later.
    """
    options.check_against(spec)
    check_onnx_input(onnx_path, spec)
    trt = require_tensorrt()
    gpu = gpu or next(iter(local_gpus()), None)
    if gpu is None:
        raise TensorRTUnavailableError("no NVIDIA GPU is visible (nvidia-smi lists none): engines build on a GPU")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    config.builder_optimization_level = options.optimization_level
    if options.hardware_compatibility == "ampere_plus":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.tensors.pixels, *options.shapes(spec))
    config.add_optimization_profile(profile)
    pinned: list[str] = []
    if options.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = pin_fp32_layers(trt, network)
        log.info("FP16 engine with %d layers kept in FP32 (LayerNorm, Softmax, reductions)", len(pinned))

    cache_file = options.timing_cache
    cache_bytes = cache_file.read_bytes() if cache_file and cache_file.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), False):
        log.warning("timing cache %s is from another GPU or TensorRT: starting a new one", cache_file)
        config.set_timing_cache(config.create_timing_cache(b""), False)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_file, bytes(config.get_timing_cache().serialize()))

    h, w = spec.input_hw
    info = EngineInfo(
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        hardware_compatibility=options.hardware_compatibility,
        precision=options.precision,
        min_batch=options.min_batch,
        opt_batch=options.opt_batch,
        max_batch=options.max_batch,
        input_shape=(3, h, w),
        build_seconds=round(seconds, 3),
        plan_bytes=plan_path.stat().st_size,
        fp32_layers=len(pinned),
        timing_cache=str(cache_file) if cache_file else None,
    )
    write_engine_record(plan_path, info)
    return info


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise TensorRTUnavailableError(
                "running an engine needs the CUDA runtime bindings: pip install 'dfserve[gpu]' (cuda-python)"
            ) from exc
    return cudart


def _check(result: Any) -> Any:
    err, *values = result
    if int(err) != 0:
        raise EngineBuildError(f"CUDA call failed: {err}")
    return values[0] if values else None


def run_engine(plan_path: Path, pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Scores [N, K] of a plan for uint8 pixels [N, 3, H, W], in chunks of the plan's max batch.

    Used by the build's FP16 parity gate; the server runs plans through Triton, not through this.
    """
    trt, cudart = require_tensorrt(), _cudart()
    record = read_engine_record(record_path(plan_path))
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise EngineCompatibilityError(f"TensorRT could not load {plan_path}; {REBUILD_HINT}")
    context = engine.create_execution_context()
    inp, out = spec.tensors.pixels, spec.tensors.scores
    in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(inp)))
    stream = _check(cudart.cudaStreamCreate())
    results = []
    try:
        for start in range(0, len(pixels), record.max_batch):
            chunk = np.ascontiguousarray(pixels[start : start + record.max_batch], dtype=in_dtype)
            context.set_input_shape(inp, chunk.shape)
            out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(out)))
            host_out = np.empty(tuple(context.get_tensor_shape(out)), dtype=out_dtype)
            d_in = _check(cudart.cudaMalloc(chunk.nbytes))
            d_out = _check(cudart.cudaMalloc(host_out.nbytes))
            try:
                h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
                _check(cudart.cudaMemcpy(d_in, chunk.ctypes.data, chunk.nbytes, h2d))
                context.set_tensor_address(inp, d_in)
                context.set_tensor_address(out, d_out)
                if not context.execute_async_v3(stream):
                    raise EngineBuildError(f"TensorRT failed to run {plan_path}")
                _check(cudart.cudaStreamSynchronize(stream))
                _check(cudart.cudaMemcpy(host_out.ctypes.data, d_out, host_out.nbytes, d2h))
            finally:
                cudart.cudaFree(d_in)
                cudart.cudaFree(d_out)
            results.append(host_out.astype(np.float32))
    finally:
        cudart.cudaStreamDestroy(stream)
    return np.concatenate(results)


def check_host(location: Path) -> None:
    """`check_engine_compatibility` against this host's TensorRT and GPUs (what `dfserve serve` should call)."""
    check_engine_compatibility(location, installed_tensorrt_version(), local_gpus())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dfserve.export.tensorrt check REPOSITORY``: run by the Triton container before tritonserver,
    so a plan from another GPU or TensorRT stops the container with one line instead of a backend failure."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dfserve.export.tensorrt")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="refuse TensorRT plans this host cannot load").add_argument("location", type=Path)
    args = parser.parse_args(argv)
    try:
        check_host(args.location)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    plans = len(find_engine_records(args.location))
    print(f"engine check: {plans} TensorRT plan(s) under {args.location} match this host", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

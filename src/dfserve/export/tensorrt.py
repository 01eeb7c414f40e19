"""TensorRT engines for the `vit` model, built strongly typed from the FP16 ONNX graph that the build has already
proven, and the checks that keep a plan from being served where it cannot run.

Precision. The build first writes the FP16 ONNX graph exactly as `--precision fp16` does for ONNX Runtime
(`dfserve.export.precision.to_fp16`: ONNX Runtime's float16 converter with LayerNormalization, Softmax and the
final sigmoid/softmax in FP32 behind explicit casts) and gates it on the CPU against the Transformers pipeline and
the FP32 graph. TensorRT then builds *that* graph with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: every
tensor keeps the type the graph gives it, so the precision the engine computes in is the precision that was
measured. Strongly typed networks take no precision flags (``BuilderFlag.FP16``) and no per-layer precision or
output types; TensorRT refuses them. An FP32 engine is the same call on the FP32 graph.

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
per output data type, the layers that write FP32, tactics and layer types. The summary goes into the plan's
record and build_report.json, so the first GPU build shows what TensorRT did.

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

import ctypes
import importlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dfserve.config import GpuServing, ModelSpec
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
    optimization_level: int = Field(default=GpuServing().builder_optimization_level, ge=0, le=5)
    """TensorRT's builder optimisation level (`GpuServing.builder_optimization_level`)."""
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


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str
    """"major.minor", e.g. "9.0"."""
    pci_bus_id: str = ""
    """"domain:bus:device.0" as nvidia-smi and CUDA print it; empty where the probe did not say."""
    uuid: str = ""
    """"GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"; empty where the probe did not say."""

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
    timing_cache: str | None = None
    strongly_typed: bool = True
    optimization_level: int | None = None
    gpu_uuid: str = ""
    layers: dict[str, Any] | None = None
    """`summarize_engine_information` of the engine inspector's JSON: what TensorRT did with the graph."""
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


def _text(value: Any) -> str:
    """cuda-python hands `char[]` fields over as bytes (NUL-padded); accept str as well."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return str(value).strip()


def format_uuid(raw: bytes) -> str:
    """nvidia-smi's spelling of a GPU UUID: "GPU-" and the 16 bytes as 8-4-4-4-12 hex digits."""
    h = bytes(raw).hex()
    if len(h) != 32:
        raise ValueError(f"a GPU UUID has 16 bytes, got {len(raw)}")
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def cuda_gpus(cudart: Any | None = None) -> list[GpuInfo]:
    """The GPUs of the CUDA runtime, in its device order (the one Triton's `gpus` and instance groups use),
    limited by CUDA_VISIBLE_DEVICES: ``cudaGetDeviceCount`` and ``cudaGetDeviceProperties``.

    Preferred over nvidia-smi, which lists GPUs in PCI order whatever CUDA_DEVICE_ORDER says and whose older
    drivers lack the `compute_cap` query. Raises `TensorRTUnavailableError` without cuda-python and
    `EngineBuildError` when the runtime fails (no driver, no device)."""
    rt = cudart or _cudart()
    count = int(_check(rt.cudaGetDeviceCount()))
    gpus = []
    for device in range(count):
        props = _check(rt.cudaGetDeviceProperties(device))
        pci = f"{int(props.pciDomainID):08x}:{int(props.pciBusID):02x}:{int(props.pciDeviceID):02x}.0".upper()
        gpus.append(
            GpuInfo(
                name=_text(props.name),
                compute_capability=f"{int(props.major)}.{int(props.minor)}",
                pci_bus_id=pci,
                uuid=format_uuid(bytes(props.uuid.bytes)),
            )
        )
    return gpus


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Lines of ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader``."""
    gpus = []
    for line in text.strip().splitlines():
        name, sep, cc = line.rpartition(",")
        if not sep or not name.strip():
            raise ValueError(f"unexpected nvidia-smi line {line!r}")
        gpus.append(GpuInfo(name=name.strip(), compute_capability=cc.strip()))
    return gpus


def _nvidia_smi_gpus() -> list[GpuInfo]:
    """The fallback where cuda-python is missing (NVIDIA's Triton image installs dfserve without the `gpu` extra).
    Its order is PCI order, and drivers before 510 lack `compute_cap` (the call then fails and nothing is listed)."""
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


def local_gpus() -> list[GpuInfo]:
    """The GPUs this process may use, empty when there is none: from the CUDA runtime, else from nvidia-smi."""
    try:
        return cuda_gpus()
    except TensorRTUnavailableError:
        return _nvidia_smi_gpus()
    except EngineBuildError as exc:  # cuda-python present, but no driver or device
        log.warning("the CUDA runtime lists no GPU: %s", exc)
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


def _inspect(trt: ModuleType, logger: Any, plan: bytes, spec: ModelSpec, options: EngineOptions) -> dict[str, Any]:
    """The engine inspector's JSON for the `opt` shape, summarised (an execution context with concrete shapes,
    because a dynamic-shape engine's formats read "N/A due to dynamic shapes" without one)."""
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
    text = inspector.get_engine_information(_member(trt, "LayerInformationFormat", "JSON"))
    return summarize_engine_information(str(text))


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
        layers = _inspect(trt, logger, plan, spec, options)
    except (BuildError, AttributeError, TypeError, ValueError, RuntimeError) as exc:
        # the record is for people: the plan is built and will be gated; a changed inspector must not fail it
        log.warning("TensorRT %s: could not record the engine's layers: %s", version, exc)
        layers = {"error": f"{type(exc).__name__}: {exc}"}
    if layers.get("by_output_dtype"):
        log.info("engine layers by output type %s", layers["by_output_dtype"])

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
    )
    write_engine_record(plan_path, info)
    return info


def _cudart() -> Any:
    """cuda-python's runtime bindings: ``cuda.bindings.runtime`` (the `gpu` extra pins cuda-python 12.6.2+, the CUDA
    of the pinned containers), else the older ``cuda.cudart`` spelling of the same module."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise TensorRTUnavailableError(
                "the CUDA runtime bindings are missing: pip install 'dfserve[gpu]' (cuda-python)"
            ) from exc
    return runtime


def _check(result: Any) -> Any:
    err, *values = result
    if int(err) != 0:
        raise EngineBuildError(f"CUDA call failed: {getattr(err, 'name', err)}")
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
    h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    stream = _check(cudart.cudaStreamCreate())
    results = []
    try:
        for start in range(0, len(pixels), record.max_batch):
            chunk = np.ascontiguousarray(pixels[start : start + record.max_batch], dtype=in_dtype)
            if not context.set_input_shape(inp, tuple(chunk.shape)):
                raise EngineBuildError(f"{plan_path} does not accept input shape {tuple(chunk.shape)}")
            out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(out)))
            host_out = np.empty(tuple(context.get_tensor_shape(out)), dtype=out_dtype)
            allocated: list[int] = []
            try:
                d_in = _check(cudart.cudaMalloc(chunk.nbytes))
                allocated.append(d_in)
                d_out = _check(cudart.cudaMalloc(host_out.nbytes))
                allocated.append(d_out)
                _check(cudart.cudaMemcpy(d_in, chunk.ctypes.data, chunk.nbytes, h2d))
                context.set_tensor_address(inp, d_in)
                context.set_tensor_address(out, d_out)
                if not context.execute_async_v3(int(stream)):  # TensorRT takes the stream as an integer handle
                    raise EngineBuildError(f"TensorRT failed to run {plan_path}")
                _check(cudart.cudaStreamSynchronize(stream))
                _check(cudart.cudaMemcpy(host_out.ctypes.data, d_out, host_out.nbytes, d2h))
            finally:
                for pointer in allocated:
                    cudart.cudaFree(pointer)
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

"""The record written beside every TensorRT plan (which TensorRT built it, for which GPU, with which options) and
the check, at serving time, that this host can run it: a plan runs only on the TensorRT version and GPU kind
it was built for.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dfserve.engine.gpus import GpuInfo
from dfserve.errors import EngineCompatibilityError

log = logging.getLogger(__name__)


RECORD_SUFFIX = ".json"


RECORD_FORMAT = 1


REBUILD_HINT = "rebuild with `dfserve build --engine tensorrt` on this host"


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
    attention: str | None = None
    """Whether TensorRT fused the attention blocks: fused, partial, unfused, none (no attention) or unknown
    (`dfserve.export.attention`); None in records written before it was recorded."""
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

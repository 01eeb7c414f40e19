"""A TensorRT plan stand-in with its compatibility record, for tests of everything around TensorRT (which cannot
run on these machines): the record is what serving checks before Triton ever reads the plan."""

from __future__ import annotations

from pathlib import Path

from dfserve.engine.gpus import GpuInfo
from dfserve.engine.records import EngineInfo, write_engine_record

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")


def write_plan_with_record(plan: Path, trt: str = "10.5.0", gpu: GpuInfo = H100, hardware: str = "none") -> Path:
    """Write `plan` (placeholder bytes) and its record claiming TensorRT `trt` on `gpu`; returns the record."""
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(b"plan")
    info = EngineInfo(
        tensorrt_version=trt,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        hardware_compatibility=hardware,
        precision="fp16",
        min_batch=1,
        opt_batch=32,
        max_batch=32,
        input_shape=(3, 384, 384),
        build_seconds=12.5,
        plan_bytes=4,
    )
    return write_engine_record(plan, info)

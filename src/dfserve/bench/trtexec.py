"""The TensorRT engine alone, as Triton runs it: `trtexec --loadEngine … --useCudaGraph` at each batch size.

    python -m dfserve.bench.trtexec model_repository/vit/1/model.plan --batches 1,8,32,64 --out trt-bench

Runs NVIDIA's `trtexec` (in the TensorRT and Triton containers of the release, /usr/src/tensorrt/bin/trtexec) on
the plan `dfserve build --engine tensorrt` wrote, once per batch size, with a CUDA graph (what Triton's TensorRT
backend does with `optimization.cuda.graphs`), and reads its performance summary. trtexec counts one inference per
batch ("Throughput: 38.2 qps" at batch 64 is 2,445 images/s), so images/s = qps × batch. The data transfers are
left in (`--noDataTransfers` is not used): Triton copies every request's pixels in and scores out too.

The figure that settles `GpuServing.max_batch_size` and the profile's `opt` (both 64): images/s at batch 32, 64
and 128 of one engine built with max 128; if 128 gains less than 3 % on 64, 64 stays.

Only the command line and the parsing have run on the development machine (against trtexec output recorded in
TensorRT 10's format, tests/bench/data); no engine has been measured in this project yet.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dfserve.bench.figures import flag_flat, label
from dfserve.engine.records import read_engine_record, record_path
from dfserve.errors import TrtexecError
from dfserve.repository.configs import read_config, spec_from_config
from dfserve.spec.model import ModelSpec, TensorNames

TRTEXEC_PATHS = ("trtexec", "/usr/src/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")
DEFAULT_BATCHES = (1, 8, 16, 32, 64)

_NUMBER = r"([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
_THROUGHPUT = re.compile(rf"\bThroughput:\s*{_NUMBER}\s*qps")
_STAT_LINE = re.compile(r"\b(Latency|GPU Compute Time|Enqueue Time|H2D Latency|D2H Latency):\s*(.*)$", re.MULTILINE)
_STAT = re.compile(rf"(min|max|mean|median|percentile\(\d+%\))\s*=\s*{_NUMBER}\s*ms")
_VERSION = re.compile(r"\[TensorRT v(\d+)\]")
_DEVICE = re.compile(r"Selected Device:\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class TrtexecResult:
    batch: int
    qps: float
    images_per_s: float
    gpu_compute_median_ms: float | None
    latency_median_ms: float | None
    latency_p99_ms: float | None
    tensorrt: str | None
    device: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_trtexec(explicit: str | None = None) -> str:
    for candidate in ([explicit] if explicit else []) + list(TRTEXEC_PATHS):
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    raise TrtexecError(
        "trtexec not found (looked for " + ", ".join(TRTEXEC_PATHS) + "): run this in NVIDIA's TensorRT or Triton "
        "container of the release that built the plan"
    )


def command(
    trtexec: str, plan: Path, tensor: str, shape: tuple[int, int, int], batch: int, seconds: float = 10.0
) -> list[str]:
    """trtexec's command line for `plan` at `batch`: CUDA graph, spin-wait timing, warm-up, fixed duration."""
    dims = "x".join(str(d) for d in (batch, *shape))
    return [
        trtexec,
        f"--loadEngine={plan}",
        f"--shapes={tensor}:{dims}",
        "--useCudaGraph",
        "--useSpinWait",
        "--warmUp=1000",
        f"--duration={seconds:g}",
        "--percentile=50,99",
    ]


def _decode_version(packed: str) -> str:
    """trtexec's "[TensorRT v100500]" → "10.5.0" (major*10000 + minor*100 + patch from TensorRT 10 on)."""
    value = int(packed)
    if value >= 100000:
        return f"{value // 10000}.{value // 100 % 100}.{value % 100}"
    return f"{value // 1000}.{value // 100 % 10}.{value % 100}"


def parse(output: str, batch: int) -> TrtexecResult:
    """The performance summary of one trtexec run ("=== Performance summary ===" and the lines after it)."""
    if "&&&& FAILED" in output:
        tail = " | ".join(line for line in output.strip().splitlines()[-3:])
        raise TrtexecError(f"trtexec failed: {tail}")
    match = _THROUGHPUT.search(output)
    if not match:
        raise TrtexecError("trtexec printed no 'Throughput: … qps' line (no performance summary)")
    stats: dict[str, dict[str, float]] = {}
    for name, rest in _STAT_LINE.findall(output):
        if found := {key: float(value) for key, value in _STAT.findall(rest)}:  # not "Total GPU Compute Time: 9.9 s"
            stats.setdefault(name, found)
    latency, compute = stats.get("Latency", {}), stats.get("GPU Compute Time", {})
    qps = float(match.group(1))
    version, device = _VERSION.search(output), _DEVICE.search(output)
    return TrtexecResult(
        batch=batch,
        qps=qps,
        images_per_s=round(qps * batch, 1),
        gpu_compute_median_ms=compute.get("median"),
        latency_median_ms=latency.get("median"),
        latency_p99_ms=latency.get("percentile(99%)"),
        tensorrt=_decode_version(version.group(1)) if version else None,
        device=device.group(1) if device else None,
    )


def repository_spec(plan: Path) -> ModelSpec | None:
    """The spec embedded in the repository's `vit/config.pbtxt` where the plan sits in a repository
    (``vit/1/model.plan``), else None."""
    config = plan.parent.parent / "config.pbtxt"
    return spec_from_config(read_config(config)) if config.is_file() else None


def measure(plan: Path, batches: Sequence[int], seconds: float = 10.0, trtexec: str | None = None) -> dict[str, Any]:
    """trtexec at each batch size; the shapes come from the plan's record, the tensor name from the repository."""
    record = read_engine_record(record_path(plan))
    too_big = [b for b in batches if not record.min_batch <= b <= record.max_batch]
    if too_big:
        raise TrtexecError(
            f"batch sizes {too_big} are outside the engine's profile {record.min_batch}..{record.max_batch}"
        )
    binary = find_trtexec(trtexec)
    spec = repository_spec(plan)
    tensor = spec.tensors.pixels if spec else TensorNames().pixels
    points = []
    for batch in batches:
        cmd = command(binary, plan, tensor, record.input_shape, batch, seconds)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 3 + 120, check=False)
        points.append(parse(done.stdout + done.stderr, batch).to_dict())
    result = {
        "label": label(
            "TensorRT", record.precision, points[0]["device"] or record.gpu_name, spec.random_weights if spec else None
        ),
        "engine": record.to_dict() | {"layers": None},
        "points": points,
    }
    result["flags"] = flag_flat([p["images_per_s"] for p in points], list(batches), "TensorRT")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dfserve.bench.trtexec",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("plan", type=Path, help="a plan written by `dfserve build --engine tensorrt` (its record beside it)")
    p.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="comma-separated batch sizes")
    p.add_argument("--seconds", type=float, default=10.0, help="trtexec --duration per batch size")
    p.add_argument("--trtexec", default=None, help="path of trtexec (default: PATH, then the containers' places)")
    p.add_argument("--out", type=Path, default=Path("trt-bench"))
    args = p.parse_args(argv)
    try:
        result = measure(args.plan, [int(b) for b in args.batches.split(",") if b.strip()], args.seconds, args.trtexec)
    except (TrtexecError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trtexec.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['label']}")
    for point in result["points"]:
        print(
            f"  batch {point['batch']:>4}: {point['images_per_s']:>10,.0f} images/s  "
            f"(GPU compute median {point['gpu_compute_median_ms']} ms)"
        )
    for flag in result["flags"]:
        print(f"  FLAGGED: {flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

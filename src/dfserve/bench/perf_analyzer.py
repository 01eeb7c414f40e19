"""What users deploy, measured from outside: NVIDIA's `perf_analyzer` against the served `vit` and `detector`.

    python -m dfserve.bench.perf_analyzer --repository /models --url triton:8001 --out /results
    docker compose --profile bench run --rm bench          # the same, in NVIDIA's SDK image of the release

`detector` gets real JPEG files (the photographs that ship with dfserve, as encoded: the server decodes them); `vit`
gets those photographs' pixels as dfserve's preprocessing makes them (UINT8 [3, H, W], what `Client(mode="pixels")`
sends). Both through `--input-data` JSON, base64 of each tensor's bytes as perf_analyzer's "Real Input Data"
documents it (a BYTES element is a 4-byte little-endian length followed by its bytes, the length included in the
base64), one perf_analyzer run per concurrency, over gRPC. perf_analyzer's "infer/sec" counts inferences, i.e.
images here (batch 1 per request); the server's own counts give the average batch the dynamic batcher formed.

Only the command lines, the input files and the parsing have run on the development machine (against
perf_analyzer output recorded in its documented format, tests/bench/data); nothing has been measured on a GPU yet.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dfserve.bench.figures import label
from dfserve.errors import PerfAnalyzerError
from dfserve.preprocessing import preprocess_bytes
from dfserve.samples import photos
from dfserve.spec.model import ModelSpec

DEFAULT_CONCURRENCY = (1, 4, 16, 64)
_REQUEST_BLOCK = re.compile(
    r"Request concurrency:\s*(\d+)(.*?)(?=Request concurrency:|Inferences/Second vs\.|\Z)", re.S
)
_CLIENT = {
    "infer_per_s": re.compile(r"Throughput:\s*([0-9.]+)\s*infer/sec"),
    "latency_avg_us": re.compile(r"Avg latency:\s*([0-9.]+)\s*usec"),
    "latency_p50_us": re.compile(r"p50 latency:\s*([0-9.]+)\s*usec"),
    "latency_p99_us": re.compile(r"p99 latency:\s*([0-9.]+)\s*usec"),
    "server_inferences": re.compile(r"Inference count:\s*(\d+)"),
    "server_executions": re.compile(r"Execution count:\s*(\d+)"),
}
_SUMMARY = re.compile(r"Concurrency:\s*(\d+),\s*throughput:\s*([0-9.]+)\s*infer/sec,\s*latency\s*([0-9.]+)\s*usec")


@dataclass(frozen=True)
class Point:
    model: str
    concurrency: int
    infer_per_s: float
    latency_avg_us: float | None
    latency_p50_us: float | None
    latency_p99_us: float | None
    average_batch: float | None
    """Server inferences / executions: the batch the dynamic batcher formed on average (None if not reported)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def input_data(model: str, spec: ModelSpec, files: Sequence[bytes]) -> dict[str, Any]:
    """perf_analyzer's `--input-data` JSON: one entry per image (a batch-1 request), each tensor as base64 of its
    bytes; the encoded file of `detector`'s BYTES input prefixed with its length, as perf_analyzer reads BYTES."""
    entries = []
    for data in files:
        if model == spec.models.ensemble:
            element = struct.pack("<I", len(data)) + data
            entries.append({spec.tensors.image: {"b64": base64.b64encode(element).decode()}})
        elif model == spec.models.engine:
            pixels = preprocess_bytes(data, spec.preprocessing, mode=spec.resize_mode)
            entries.append({spec.tensors.pixels: {"b64": base64.b64encode(pixels.tobytes()).decode()}})
        else:
            raise ValueError(
                f"no input data for model {model!r}: expected {spec.models.ensemble} or {spec.models.engine}"
            )
    return {"data": entries}


def command(
    binary: str, model: str, url: str, data_path: Path, spec: ModelSpec, concurrency: int, window_ms: int = 5000
) -> list[str]:
    """One perf_analyzer run: `model` at `concurrency`, gRPC, the given input data, latency-stabilised windows."""
    cmd = [
        binary,
        "-m",
        model,
        "-u",
        url,
        "-i",
        "grpc",
        "-b",
        "1",
        "--input-data",
        str(data_path),
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--measurement-interval",
        str(window_ms),
        "--stability-percentage",
        "10",
        "--max-trials",
        "6",
    ]
    return cmd


def _float(pattern: re.Pattern[str], text: str) -> float | None:
    match = pattern.search(text)
    return float(match.group(1)) if match else None


def parse(output: str, model: str, batching_model: str | None = None) -> list[Point]:
    """Each "Request concurrency: N" block's client figures and server counts; the summary lines otherwise.

    The average batch is `batching_model`'s where an ensemble lists it among its composing models (the ensemble
    itself runs every request alone), else `model`'s own."""
    if "Failed to" in output or "error:" in output.lower():
        problem = next(line for line in output.splitlines() if "Failed to" in line or "error:" in line.lower())
        raise PerfAnalyzerError(f"perf_analyzer failed: {problem.strip()}")
    points = []
    for concurrency, block in _REQUEST_BLOCK.findall(output):
        client, _, server = block.partition("Client:")[2].partition("Server:")  # not the "Pass [n]" lines
        if batching_model and (
            composing := re.search(
                rf"\n\s*{re.escape(batching_model)}, version: \d+\n(.*?)(?:\n\s*\n|\Z)", server, re.S
            )
        ):
            server = composing.group(1)
        throughput = _float(_CLIENT["infer_per_s"], client)
        if throughput is None:
            continue
        inferences, executions = (
            _float(_CLIENT["server_inferences"], server),
            _float(_CLIENT["server_executions"], server),
        )
        points.append(
            Point(
                model=model,
                concurrency=int(concurrency),
                infer_per_s=throughput,
                latency_avg_us=_float(_CLIENT["latency_avg_us"], client),
                latency_p50_us=_float(_CLIENT["latency_p50_us"], client),
                latency_p99_us=_float(_CLIENT["latency_p99_us"], client),
                average_batch=round(inferences / executions, 2) if inferences and executions else None,
            )
        )
    if not points:
        points = [
            Point(model, int(c), float(t), float(lat), None, None, None) for c, t, lat in _SUMMARY.findall(output)
        ]
    if not points:
        raise PerfAnalyzerError("perf_analyzer printed no measurement (no 'Request concurrency' block)")
    return points


def find_perf_analyzer(explicit: str | None = None) -> str:
    found = shutil.which(explicit or "perf_analyzer")
    if not found:
        raise PerfAnalyzerError(
            "perf_analyzer not found: run this in NVIDIA's Triton SDK image of the release "
            "(nvcr.io/nvidia/tritonserver:<release>-py3-sdk; `docker compose --profile bench run --rm bench`)"
        )
    return found


def measure(
    repository: Path,
    url: str,
    models: Sequence[str],
    concurrencies: Sequence[int],
    out: Path,
    window_ms: int = 5000,
    binary: str | None = None,
) -> dict[str, Any]:
    spec = ModelSpec.load(repository)
    tool = find_perf_analyzer(binary)
    files = [data for _, data in photos()]
    result: dict[str, Any] = {"points": [], "models": {}}
    for model in models:
        data_path = out / f"input_{model}.json"
        data_path.write_text(json.dumps(input_data(model, spec, files)))
        for concurrency in concurrencies:
            cmd = command(tool, model, url, data_path, spec, concurrency, window_ms)
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=window_ms / 1000 * 12 + 120, check=False)
            if done.returncode != 0:
                raise PerfAnalyzerError(
                    f"{' '.join(cmd)} exited {done.returncode}: {(done.stderr or done.stdout)[-400:]}"
                )
            result["points"] += [p.to_dict() for p in parse(done.stdout, model, spec.models.engine)]
        result["models"][model] = label(
            f"served `{model}` through Triton ({'JPEG files' if model == spec.models.ensemble else 'pixels'})",
            spec.precision,
            url,
            spec.random_weights,
        )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dfserve.bench.perf_analyzer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repository", type=Path, required=True, help="the served model repository (for its spec)")
    p.add_argument("--url", default="localhost:8001", help="Triton's gRPC address (default %(default)s)")
    p.add_argument("--models", default="vit,detector", help="comma-separated (default %(default)s)")
    p.add_argument("--concurrency", default=",".join(map(str, DEFAULT_CONCURRENCY)), help="comma-separated levels")
    p.add_argument("--window-ms", type=int, default=5000, help="perf_analyzer --measurement-interval")
    p.add_argument("--perf-analyzer", default=None, help="path of perf_analyzer (default: PATH)")
    p.add_argument("--out", type=Path, default=Path("perf-bench"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    try:
        result = measure(args.repository, args.url, models, levels, args.out, args.window_ms, args.perf_analyzer)
    except (PerfAnalyzerError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    (args.out / "perf_analyzer.json").write_text(json.dumps(result, indent=2) + "\n")
    for model, text in result["models"].items():
        print(text)
        for point in (p for p in result["points"] if p["model"] == model):
            print(
                f"  concurrency {point['concurrency']:>4}: {point['infer_per_s']:>10,.1f} images/s, "
                f"p99 {point['latency_p99_us']} us, average batch {point['average_batch']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

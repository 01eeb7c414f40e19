"""Raw ONNX Runtime FP32 against its INT8 quantizations (dynamic, as built, and static QDQ), alternating rounds.

The measurement behind dynamic quantization for `dfserve build --precision int8` (`export.precision.to_int8`):
speed at batch 1 and 8 and drift from FP32 on the parity images, lone images and batches of 8 (dynamic INT8
takes activation scales per batch, so an image's score moves with its batch-mates; static QDQ does not), both
quantizations from the same FP32 graph in one run.

    python -m dfserve.bench.int8 REPOSITORY [--seconds 2] [--rounds 4] [--threads 2]

REPOSITORY is an FP32 build (its `vit/1/model.onnx` is quantized into a temporary folder).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dfserve.engine.cpu import describe_isa, read_host
from dfserve.export.fidelity import compare
from dfserve.export.parity import parity_pixels, write_parity_images
from dfserve.export.precision import to_int8
from dfserve.spec.model import ModelSpec
from dfserve.spec.names import ONNX_FILENAME

QUANTIZED_OPS = ("MatMul", "Gemm")
"""As `export.precision.to_int8` quantizes."""


def batch1_scores(onnx_path: Path, scores_output: str, pixels_input: str, pixels: np.ndarray) -> np.ndarray:
    """Scores [N,K] one image per run: what lone requests get."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rows = [session.run([scores_output], {pixels_input: pixels[i : i + 1]})[0] for i in range(len(pixels))]
    return np.concatenate(rows).astype(np.float64)


def quantize_static_qdq(fp32_path: Path, out: Path, pixels: np.ndarray, input_name: str) -> Path:
    """Static QDQ (per-channel weights), calibrated one parity image at a time: the alternative measured."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([{input_name: pixels[i : i + 1]} for i in range(len(pixels))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    quantize_static(
        str(fp32_path),
        str(out),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return out


def run(repository: Path, *, seconds: float = 2.0, rounds: int = 4, threads: int = 2) -> dict[str, Any]:
    """Drift from FP32 (lone images and batches of 8) and images/s at batch 1 and 8, median over rounds."""
    import onnx
    import onnxruntime as ort

    spec = ModelSpec.load(repository)
    fp32_path = repository / spec.models.engine / "1" / ONNX_FILENAME
    with tempfile.TemporaryDirectory(prefix="dfserve-bench-int8-") as tmp_name:
        tmp = Path(tmp_name)
        pixels = parity_pixels(spec, write_parity_images(tmp / "parity"), spec.resize_mode)
        onnx.save(to_int8(onnx.load(str(fp32_path))), str(tmp / "dynamic.onnx"))
        graphs = {
            "fp32": fp32_path,
            "int8_dynamic": tmp / "dynamic.onnx",
            "int8_static_qdq": quantize_static_qdq(fp32_path, tmp / "static.onnx", pixels, spec.tensors.pixels),
        }
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        sessions = {
            k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in graphs.items()
        }
        ref = batch1_scores(fp32_path, spec.tensors.scores, spec.tensors.pixels, pixels)
        drift: dict[str, Any] = {}
        for name in ("int8_dynamic", "int8_static_qdq"):
            lone = batch1_scores(graphs[name], spec.tensors.scores, spec.tensors.pixels, pixels)
            batched = np.concatenate(
                [
                    sessions[name].run(None, {spec.tensors.pixels: pixels[i : i + 8]})[0]
                    for i in range(0, len(pixels), 8)
                ]
            )
            drift[name] = {
                "batch1": compare(ref, lone, spec.labels).as_report(),
                "batch8": compare(ref, batched, spec.labels).as_report(),
            }
        speed: dict[str, dict[str, float]] = {}
        for batch in (1, 8):
            feed = {spec.tensors.pixels: np.resize(pixels, (batch, *pixels.shape[1:]))}
            per_round: dict[str, list[float]] = {k: [] for k in sessions}
            for _ in range(rounds):  # alternating, so that other load on the machine hits every graph alike
                for name, session in sessions.items():
                    session.run(None, feed)
                    start, done = time.perf_counter(), 0
                    while time.perf_counter() - start < seconds:
                        session.run(None, feed)
                        done += batch
                    per_round[name].append(done / (time.perf_counter() - start))
            speed[f"batch{batch}"] = {k: float(np.median(v)) for k, v in per_round.items()}
    host = read_host()
    return {
        "host": {"cpu_model": host.model, "isa": sorted(host.isa), "cores": host.cores},
        "int8_instructions": sorted(host.accelerates("int8")),
        "images": len(pixels),
        "threads": threads,
        "rounds": rounds,
        "drift_vs_fp32": drift,
        "images_per_s": speed,
    }


def build_parser(prog: str = "python -m dfserve.bench.int8") -> argparse.ArgumentParser:
    """The options, shared by `python -m dfserve.bench.int8` and `dfserve bench int8`."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m dfserve.bench.int8") -> int:
    args = build_parser(prog).parse_args(argv)
    result = run(args.repository, seconds=args.seconds, rounds=args.rounds, threads=args.threads)
    print(
        f"{result['host']['cpu_model']}, {result['host']['cores']} cores; INT8 instructions: "
        f"{describe_isa(tuple(result['int8_instructions']))}"
    )
    print(f"{'graph':<16} {'max|Δ| b1':>10} {'max|Δ| b8':>10} {'agree b1':>9} {'img/s b1':>9} {'img/s b8':>9}")
    for name in ("fp32", "int8_dynamic", "int8_static_qdq"):
        d = result["drift_vs_fp32"].get(name)
        b1, b8 = result["images_per_s"]["batch1"][name], result["images_per_s"]["batch8"][name]
        cols = f"{'-':>10} {'-':>10} {'-':>9}"
        if d:
            one, eight = d["batch1"], d["batch8"]
            cols = f"{one['max_abs_diff']:>10.2e} {eight['max_abs_diff']:>10.2e} {one['agreement']:>9.1%}"
        print(f"{name:<16} {cols} {b1:>9.2f} {b8:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The torch engine served through the embedded Triton, against the same engine alone: the prepared GPU script.

    python -m dfserve.bench.torch_served --out torch-bench                        # ViT-S/16@384, random weights
    python -m dfserve.bench.torch_served --model ./ckpt --device cpu --seconds 2  # (what the test runs, tiny model)

For a host with PyTorch and CUDA but no TensorRT, no NVIDIA containers and no internet (`pip install
'dfserve[build,serve]'` beforehand). In at most `--budget-s` (default 420 s, under 8 minutes):

1. a checkpoint: `--model`, else the published ViT-S/16@384 shape with seeded random weights and the head scaled
   ×30 (`sensitive_head`: scores spread over (0, 1), so drift would show);
2. `dfserve build --engine torch` into `<out>/repository` (FP16 on CUDA, FP32 on a CPU: `half` is never used on a
   CPU), with the build's own parity gate;
3. the engine alone, in this process: images/s of `ScoringModule` (uint8 pixels in, scores out) at batch 1, 8 and
   the repository's max batch, median of timed batches after warm-up;
4. the repository served by the embedded Triton (`TritonServer`, what `dfserve serve` runs), and `vit` driven over
   gRPC by closed-loop threads sending the shipped photographs' pixels (what `Client(mode="pixels")` sends), one
   image per request, at each `--concurrency`: images/s, p50/p99 latency;
5. a table with what each row measured, and the served/engine ratio (the goal on a GPU: served ≥ 0.9× the
   engine at its max batch).

Nothing of it has run on a GPU in this project yet; the test runs it end to end on the CPU with a tiny checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfserve.bench.figures import check_half, label
from dfserve.engine.torch_module import engine_for, load_classifier
from dfserve.export.checkpoint import save_random_checkpoint
from dfserve.export.pipeline import BuildOptions, build
from dfserve.preprocessing import preprocess_bytes
from dfserve.samples import photos
from dfserve.spec.model import ModelSpec
from dfserve.triton.process import TritonServer

DEFAULT_CONCURRENCY = (1, 4, 16, 64)
HEAD_SCALE = 30.0


def make_checkpoint(folder: Path, seed: int = 0) -> Path:
    """The published ViT-S/16@384 shape, seeded random weights, the head scaled ×`HEAD_SCALE`."""
    from safetensors.torch import load_file, save_file

    save_random_checkpoint(folder, seed=seed)
    weights = load_file(folder / "model.safetensors")
    for name in ("classifier.weight", "classifier.bias"):
        weights[name] = weights[name] * HEAD_SCALE
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def build_repository(model: Path, out: Path, precision: str, max_batch: int | None) -> ModelSpec:

    overrides = {"max_batch_size": max_batch} if max_batch else {}
    build(BuildOptions(out=out, model=str(model), engine="torch", precision=precision, batching_overrides=overrides))  # type: ignore[arg-type]
    return ModelSpec.load(out)


def engine_alone(repository: Path, spec: ModelSpec, device: str, seconds: float) -> list[dict[str, Any]]:
    """Images/s of the served classifier in this process, at batch 1, 8 and max."""
    import torch

    engine = engine_for(
        load_classifier(repository / spec.models.engine / "1"), spec, device=device, precision=spec.precision
    )
    h, w = spec.input_hw
    points = []
    with torch.inference_mode():
        for batch in sorted({1, min(8, spec.batching.max_batch_size), spec.batching.max_batch_size}):
            x = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, device=device)
            for _ in range(2):
                engine(x)
            times: list[float] = []
            deadline = time.perf_counter() + seconds
            while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 500):
                start = time.perf_counter()
                engine(x)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            median = float(np.median(times))
            points.append(
                {"batch": batch, "images_per_s": round(batch / median, 1), "ms_per_batch": round(median * 1e3, 3)}
            )
    return points


def served(grpc_url: str, spec: ModelSpec, concurrency: int, seconds: float) -> dict[str, Any]:
    """Closed-loop threads, each with its own gRPC client, sending one photograph's pixels per request to `vit`."""
    import tritonclient.grpc as grpcclient

    pixels = [preprocess_bytes(data, spec.preprocessing, mode=spec.resize_mode)[None] for _, data in photos()]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_at = time.perf_counter() + 0.5
    stop_at = start_at + seconds

    def user(index: int) -> None:
        client = grpcclient.InferenceServerClient(grpc_url)
        mine: list[float] = []
        k = index
        while time.perf_counter() < start_at:
            time.sleep(0.001)
        while time.perf_counter() < stop_at:
            inp = grpcclient.InferInput(spec.tensors.pixels, list(pixels[k % len(pixels)].shape), "UINT8")
            inp.set_data_from_numpy(pixels[k % len(pixels)])
            sent = time.perf_counter()
            try:
                client.infer(spec.models.engine, [inp], client_timeout=60)
            except Exception as exc:  # every failure is counted and reported, none hidden
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                break
            mine.append(time.perf_counter() - sent)
            k += concurrency
        client.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 90)
    ordered = sorted(latencies)
    return {
        "concurrency": concurrency,
        "images_per_s": round(len(ordered) / seconds, 1),
        "latency_p50_ms": round(ordered[len(ordered) // 2] * 1e3, 2) if ordered else None,
        "latency_p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 2) if ordered else None,
        "requests": len(ordered),
        "errors": errors[:3],
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"# torch engine served through Triton: {result['device_name']}", ""]
    lines += [
        f"Engine alone: {result['labels']['engine']}",
        "",
        "| batch | images/s | ms per batch |",
        "| ---: | ---: | ---: |",
    ]
    lines += [f"| {p['batch']} | {p['images_per_s']:,.1f} | {p['ms_per_batch']} |" for p in result["engine"]]
    lines += ["", f"Served: {result['labels']['served']}", ""]
    lines += ["| concurrency | images/s | p50 ms | p99 ms | errors |", "| ---: | ---: | ---: | ---: | --- |"]
    for p in result["served"]:
        lines.append(
            f"| {p['concurrency']} | {p['images_per_s']:,.1f} | {p['latency_p50_ms']} | {p['latency_p99_ms']} | "
            f"{'; '.join(p['errors']) or '-'} |"
        )
    lines += ["", f"Best served / engine at max batch: {result['served_over_engine']} (goal on a GPU: >= 0.9)"]
    lines += [f"FLAGGED: {flag}" for flag in result["flags"]]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU here")
    precision = "fp16" if device.startswith("cuda") else "fp32"
    check_half(device, precision == "fp16")
    device_name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else make_checkpoint(out / "checkpoint")
    print(f"[{time.perf_counter() - started:5.0f} s] building the torch repository ({precision})", flush=True)
    spec = build_repository(model, out / "repository", precision, args.max_batch)
    print(f"[{time.perf_counter() - started:5.0f} s] the engine alone on {device}", flush=True)
    engine = engine_alone(out / "repository", spec, device, args.seconds / 2)
    server = TritonServer(out / "repository", http_port=0, grpc_port=0, metrics_port=0)
    print(f"[{time.perf_counter() - started:5.0f} s] serving", flush=True)
    server.start(timeout=max(60.0, args.budget_s - (time.perf_counter() - started) - 60))
    points = []
    try:
        for level in args.concurrency:
            if time.perf_counter() - started > args.budget_s - args.seconds - 15:
                print(f"budget: stopped before concurrency {level}", flush=True)
                break
            points.append(served(server.grpc_url, spec, level, args.seconds))
            print(
                f"[{time.perf_counter() - started:5.0f} s] concurrency {level}: {points[-1]['images_per_s']} images/s",
                flush=True,
            )
    finally:
        server.stop()
    best = max((p["images_per_s"] for p in points), default=0.0)
    ratio = round(best / engine[-1]["images_per_s"], 3) if engine[-1]["images_per_s"] else None
    random_weights = None if args.model else True  # a given checkpoint's weights are whatever it holds
    result = {
        "device": device,
        "device_name": device_name,
        "precision": precision,
        "labels": {
            "engine": label("PyTorch eager (in-process)", precision, f"{device} ({device_name})", random_weights),
            "served": label(
                "served `vit` (torch engine, Triton Python backend)",
                precision,
                f"{device} ({device_name})",
                random_weights,
            ),
        },
        "engine": engine,
        "served": points,
        "served_over_engine": ratio,
        "flags": [
            f"concurrency {p['concurrency']}: {len(p['errors'])} error(s), figure not reported"
            for p in points
            if p["errors"]
        ],
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    (out / "torch_served.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "torch_served.md").write_text(table(result))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dfserve.bench.torch_served",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("torch-bench"))
    p.add_argument("--model", default=None, help="checkpoint folder (default: ViT-S/16@384, random weights)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda where torch sees one)")
    p.add_argument("--max-batch", type=int, default=64, help="vit's max batch (default %(default)s)")
    p.add_argument("--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=list(DEFAULT_CONCURRENCY))
    p.add_argument("--seconds", type=float, default=15.0, help="per concurrency level (default %(default)s)")
    p.add_argument("--budget-s", type=float, default=420.0, help="whole run (default %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    result = run(build_parser().parse_args(argv))
    print(table(result))
    return 1 if result["flags"] or not result["served"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""`dfserve bench`: argument parsing only; the work is in `dfserve.bench.run`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dfserve.bench.options import BenchOptions
from dfserve.commandline import positive_ints


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="Transformers pipeline vs raw ONNX Runtime vs served vit and detector, FP32 and INT8, side by side",
        description=(
            "One run, alternating rounds, the same JPEG files: the Transformers pipeline in process, raw ONNX "
            "Runtime FP32 and INT8, the served engine (uint8 pixels) and the served ensemble (files) for FP32 and "
            "INT8 through the SDK; images/s, p50/p99 latency, CPU s per image, resident memory, ratios, goals; "
            "preprocessing against the Transformers processor; server memory per max batch size. Writes "
            "bench.json, bench.md and bench.png. Default model: the full-size ViT-S/16 at 384 with random weights "
            "(about 10 minutes on 2 cores with given repositories)."
        ),
    )

    d = BenchOptions()
    p.add_argument("--model", default=None, help="checkpoint folder or hub id (default: the preset, random weights)")
    p.add_argument("--repository", type=Path, default=None, help="an already built FP32 repository (skips its build)")
    p.add_argument("--int8-repository", type=Path, default=None, help="an already built INT8 repository")
    p.add_argument("--random-weights", action="store_true", help="build --model with random weights")
    p.add_argument(
        "--concurrency",
        type=positive_ints,
        default=d.concurrency,
        help="comma-separated concurrency levels (default: %(default)s)",
    )
    p.add_argument("--rounds", type=int, default=d.rounds, help="alternating rounds (%(default)s)")
    p.add_argument(
        "--seconds", type=float, default=d.seconds, help="seconds per variant, level and round (%(default)s)"
    )
    p.add_argument("--pipeline-batch", type=int, default=d.pipeline_batch, help="Transformers pipeline batch size")
    p.add_argument(
        "--memory-batches",
        type=positive_ints,
        default=d.memory_batches,
        help="comma-separated max batch sizes for the memory section (default: %(default)s)",
    )
    p.add_argument("--repeats", type=int, default=d.repeats, help="repetitions of the preprocessing section")
    p.add_argument("--images", type=Path, default=None, help="folder of JPEGs (default: generated photo-like)")
    p.add_argument("--image-count", type=int, default=d.image_count)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ./bench-<time>)")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from dfserve.bench.run import BenchOptions, run_bench
    from dfserve.terminal import console

    opts = BenchOptions(
        model=args.model,
        repository=args.repository,
        int8_repository=args.int8_repository,
        random_weights=args.random_weights,
        concurrency=args.concurrency,
        rounds=args.rounds,
        seconds=args.seconds,
        pipeline_batch=args.pipeline_batch,
        memory_batches=args.memory_batches,
        repeats=args.repeats,
        images=args.images,
        image_count=args.image_count,
        out=args.out,
    )
    result = run_bench(opts, console(stderr=True))
    print(result.markdown)
    return 0

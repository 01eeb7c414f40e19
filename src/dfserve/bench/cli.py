"""`dfserve bench`: argument parsing only; the work is in `dfserve.bench.run`.

`dfserve bench` alone is the side-by-side bench; `dfserve bench NAME ...` runs one focused measurement (tune, int8,
overhead, gpu, gpu-decode, trtexec, perf-analyzer, torch-served, fp16-variants) with exactly its options: the
words after the sub-command go to that module's own `main(argv)` (`dfserve.bench.<name>`, dashes as underscores),
so each keeps one parser, and its imports wait until it runs.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dfserve.bench.options import BenchOptions
from dfserve.commandline import checked, deprecated_alias, positive_int, positive_ints
from dfserve.measure.stats import parse_duration

MEASUREMENTS: dict[str, str] = {
    "tune": "the CPU serving defaults: served vit against raw ONNX Runtime per batching candidate (CPU_BATCHING)",
    "int8": "raw ONNX Runtime FP32 against dynamic and static INT8 on this CPU: drift and images/s",
    "overhead": "the SDK's own cost per request against a bare Triton client, on a running server",
    "gpu": "PyTorch on a GPU host: eager and compiled ceilings, drift, and whether CPU decoding feeds the GPU",
    "gpu-decode": "served detector with --decode cpu and gpu, the engine alone and GPU decode alone (a GPU host)",
    "trtexec": "the TensorRT engine alone with CUDA graphs, per batch size (trtexec --loadEngine)",
    "perf-analyzer": "served vit and detector with real JPEGs at several concurrencies (NVIDIA's perf_analyzer)",
    "torch-served": "the torch engine served through the embedded Triton against the same engine alone",
    "fp16-variants": "FP16 graph variants (what stays FP32) against the pipeline and FP32 on this CPU",
}


class _Measurements(argparse._SubParsersAction):
    """Hands the words after `dfserve bench NAME` to `dfserve.bench.NAME.main` unparsed (argparse would otherwise
    refuse the options it does not know); `dfserve bench --help` still lists the sub-commands."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: Any = None
    ) -> None:
        name, *rest = values
        namespace.measurement = name
        namespace.measurement_argv = rest
        namespace.func = _measurement


def _measurement(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"dfserve.bench.{args.measurement.replace('-', '_')}")
    argv: Sequence[str] = args.measurement_argv
    if "prog" in inspect.signature(module.main).parameters:  # its parser takes the name it is called by
        return int(module.main(list(argv), prog=f"dfserve bench {args.measurement}"))
    return int(module.main(list(argv)))


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
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint folder or hub id (default: the ViT-S/16 at 384 preset with random weights)",
    )
    p.add_argument(
        "--repository",
        type=Path,
        default=None,
        metavar="DIR",
        help="an already built FP32 repository, which skips its build (default: built here from --model)",
    )
    p.add_argument(
        "--int8-repository",
        type=Path,
        default=None,
        metavar="DIR",
        help="an already built INT8 repository, which skips its build (default: built here from --model)",
    )
    p.add_argument("--random-weights", action="store_true", help="build --model with random weights")
    p.add_argument(
        "--concurrency",
        type=positive_ints,
        default=d.concurrency,
        metavar="N[,N...]",
        help="requests in flight; several, comma-separated, for a sweep",
    )
    p.add_argument("--rounds", type=positive_int, default=d.rounds, help="alternating rounds")
    p.add_argument(
        "--window",
        type=checked(parse_duration, "duration"),
        default=d.seconds,
        metavar="DURATION",
        help="length of each timed window: one variant at one concurrency in one round (default: %(default)ss)",
    )
    p.add_argument(
        "--pipeline-batch", type=positive_int, default=d.pipeline_batch, help="Transformers pipeline batch size"
    )
    p.add_argument(
        "--memory-batches",
        type=positive_ints,
        default=d.memory_batches,
        metavar="N[,N...]",
        help="max batch sizes for the server-memory section, comma-separated",
    )
    p.add_argument("--repeats", type=positive_int, default=d.repeats, help="repetitions of the preprocessing section")
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="time these JPEG files instead of generated ones (default: --image-count generated photo-like JPEGs)",
    )
    p.add_argument(
        "--image-count",
        type=positive_int,
        default=d.image_count,
        help="how many photo-like JPEGs to generate when --images is not given",
    )
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output folder (default: a new ./bench-<date>-<time>)"
    )
    deprecated_alias(p, "--seconds", new="--window")
    p.set_defaults(func=_bench)
    measurements = p.add_subparsers(
        action=_Measurements,
        dest="measurement",
        metavar="MEASUREMENT",
        title="focused measurements (dfserve bench NAME --help for each one's options)",
    )
    for name, text in MEASUREMENTS.items():
        measurements.add_parser(name, help=text, add_help=False)


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
        seconds=args.window,
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

"""`dfserve loadtest` and `dfserve bench`: argument parsing only; the work is in `runner` and `bench`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dfserve.cli import positive_ints
from dfserve.endpoints import PROTOCOLS
from dfserve.loadtest.options import SHAPES, LoadSettings
from dfserve.loadtest.target import MODES


def register(subparsers: Any) -> None:
    _register_loadtest(subparsers)
    _register_bench(subparsers)
    _register_soak(subparsers)


def _register_loadtest(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "loadtest",
        help="run a Locust load test (headless) and write CSV, HTML, summary.json and a plot",
        description=(
            "Run dfserve's locustfile headless against a running server. Writes Locust's CSV and HTML report, "
            "summary.json and users.png (throughput and latency against users) into --out. "
            "--shape step adds --step-users every --step-time seconds up to --users and reports the knee."
        ),
    )
    p.add_argument(
        "--url",
        "--host",
        dest="host",
        required=True,
        help="server address [scheme://]host[:port], as for every dfserve command (--host: Locust's name for it)",
    )
    p.add_argument("--protocol", choices=PROTOCOLS, default=None, help="default: from the scheme, else http")
    p.add_argument("--users", "-u", type=int, default=4, help="concurrent users (the ceiling of a step ramp)")
    p.add_argument("--spawn-rate", "-r", type=float, default=2.0, help="users started per second")
    p.add_argument("--run-time", "-t", default=None, help="e.g. 30s, 2m (default: 30s; a step ramp: until it ends)")
    p.add_argument("--mode", choices=MODES, default="file", help="file: images to the ensemble; pixels: tensors")
    p.add_argument("--shape", choices=SHAPES, default="constant")
    p.add_argument("--images", type=Path, default=None, help="folder of images (default: generated photo-like)")
    p.add_argument("--image-count", type=int, default=8, help="generated images (without --images)")
    p.add_argument("--batch", type=int, default=1, help="images per request")
    p.add_argument("--model", default="", help="model whose config carries the spec (default: automatic)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a request counts as failed")
    p.add_argument("--step-users", type=int, default=2)
    p.add_argument("--step-time", type=float, default=15.0, help="seconds per step")
    p.add_argument("--step-warmup", type=float, default=3.0, help="seconds of each step not measured")
    p.add_argument("--patience", type=int, default=2, help="steps past the knee before the ramp stops")
    p.add_argument("--processes", type=int, default=1, help="Locust worker processes (distributed mode) ")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ./loadtest-<time>)")
    p.add_argument("--quiet", action="store_true", help="do not echo Locust's console output")
    p.set_defaults(func=_loadtest)


def _loadtest(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dfserve.loadtest.runner import LoadtestOptions, run_loadtest

    run_time = args.run_time if args.run_time is not None else (None if args.shape == "step" else "30s")
    settings = LoadSettings(
        mode=args.mode,
        protocol=args.protocol or "http",
        images=str(args.images or ""),
        image_count=args.image_count,
        batch=args.batch,
        model=args.model,
        timeout=args.timeout,
        shape=args.shape,
        step_users=args.step_users,
        step_time=args.step_time,
        step_warmup=args.step_warmup,
        patience=args.patience,
    )
    opts = LoadtestOptions(
        host=args.host,
        users=args.users,
        spawn_rate=args.spawn_rate,
        run_time=run_time,
        protocol=args.protocol,
        settings=settings,
        out=args.out,
        processes=args.processes,
        echo=not args.quiet,
    )
    console = Console(stderr=True)
    summary = run_loadtest(opts, console)
    print_summary(summary, console)
    return 1 if summary["failures"] else 0


def print_summary(summary: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"load test: {summary['protocol']} {summary['mode']} ({summary['shape']})")
    for col in ("requests", "failures", "req/s", "images/s", "p50 ms", "p90 ms", "p99 ms", "users"):
        table.add_column(col, justify="right")
    table.add_row(
        str(summary["requests"]),
        str(summary["failures"]),
        f"{summary['rps']:.2f}",
        f"{summary['images_per_s']:.2f}",
        *(f"{summary[k]:.0f}" if summary[k] is not None else "-" for k in ("p50_ms", "p90_ms", "p99_ms")),
        str(summary["users"]),
    )
    console.print(table)
    knee = summary.get("knee")
    if knee:
        verdict = "throughput stopped growing" if knee["saturated"] else "still growing at the last step"
        console.print(
            f"knee: {knee['users']} users, {knee['rps']:.2f} req/s, p50 {knee['p50_ms']:.0f} ms, "
            f"p99 {knee['p99_ms']:.0f} ms ({verdict})"
        )
    if summary["failures"]:
        top = summary["failures_detail"][:3]
        console.print(f"[bold red]{summary['failures']} failed requests[/]: " + json.dumps(top), highlight=False)
    console.print(f"report: {Path(summary['files']['html']).parent}", highlight=False)


def _register_bench(subparsers: Any) -> None:
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
    from dfserve.bench.options import BenchOptions

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
    from rich.console import Console

    from dfserve.bench.run import BenchOptions, run_bench

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
    result = run_bench(opts, Console(stderr=True))
    print(result.markdown)
    return 0


def _register_soak(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "soak",
        help="steady load for a long time: failures, memory growth and latency drift, window by window",
        description=(
            "A closed-loop load through the SDK (real photographs to the detector ensemble, or pixels to the "
            "engine) at --concurrency (default: the knee of a short ramp) for --duration. Every --window it "
            "reports requests, failures, images/s, p50/p99, the RSS of tritonserver and its stubs and their "
            "/dev/shm regions; after --warmup, memory growth and latency drift. Writes soak.json, soak.md and "
            "soak.png. Exit status 1 when a request failed or memory grew more than --max-growth."
        ),
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", default=None, help="a running server, [scheme://]host[:port]")
    where.add_argument("--repository", type=Path, default=None, help="serve this repository here for the soak")
    p.add_argument("--pid", type=int, default=None, help="with --url: tritonserver's pid, for its memory")
    p.add_argument("--protocol", choices=PROTOCOLS, default=None, help="default: from the scheme, else http")
    p.add_argument("--mode", choices=MODES, default="file", help="file: photographs to the ensemble; pixels: vit")
    p.add_argument("--concurrency", "-c", type=int, default=None, help="closed-loop threads (default: the knee)")
    p.add_argument("--duration", default="10m", help="e.g. 600, 90s, 10m (default 10m)")
    p.add_argument("--window", default="15s", help="length of one window (default 15s)")
    p.add_argument("--warmup", default="10%", help="not judged: a share (10%%) or a duration (60s); default 10%%")
    p.add_argument("--max-growth", type=float, default=5.0, help="percent of memory growth allowed after warm-up")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request, retries included")
    p.add_argument("--images", type=Path, default=None, help="folder of image files (default: the sample photos)")
    p.add_argument("--ramp-step", default="10s", help="least length of a ramp step (longer until 40 requests)")
    p.add_argument("--ramp-max", type=int, default=32, help="most threads the ramp tries")
    p.add_argument("--tritonserver", default=None, help="with --repository: the tritonserver binary")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ./soak-<time>)")
    p.set_defaults(func=_soak)


def _soak(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dfserve.loadtest.drift import parse_duration
    from dfserve.loadtest.runner import default_out_dir
    from dfserve.loadtest.soak import SoakError, SoakOptions, run_soak
    from dfserve.loadtest.soak_report import LiveDisplay, print_verdict, write_outputs

    try:
        duration_s, window_s, ramp_step_s = (parse_duration(v) for v in (args.duration, args.window, args.ramp_step))
    except ValueError as exc:
        raise SoakError(str(exc)) from exc
    opts = SoakOptions(
        url=args.url,
        repository=args.repository,
        pid=args.pid,
        protocol=args.protocol,
        mode=args.mode,
        concurrency=args.concurrency,
        duration_s=duration_s,
        window_s=window_s,
        warmup=args.warmup,
        timeout_s=args.timeout,
        max_growth_pct=args.max_growth,
        images=args.images,
        ramp_step_s=ramp_step_s,
        ramp_max=args.ramp_max,
        tritonserver=args.tritonserver,
    )
    out = (args.out or default_out_dir(prefix="soak")).expanduser().resolve()
    console = Console(stderr=True)
    display = LiveDisplay(console)
    try:
        result = run_soak(opts, display)
    finally:
        display.finished()
    write_outputs(result, out)
    print_verdict(result, console)
    return 0 if result.verdict.passed else 1

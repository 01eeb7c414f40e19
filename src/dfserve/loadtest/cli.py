"""`dfserve loadtest`: argument parsing only; the work is in `dfserve.loadtest.runner`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dfserve.loadtest.options import SHAPES, LoadSettings
from dfserve.spec.endpoints import PROTOCOLS
from dfserve.spec.names import MODES


def register(subparsers: Any) -> None:
    _register_loadtest(subparsers)


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
    from dfserve.loadtest.runner import LoadtestOptions, run_loadtest
    from dfserve.terminal import console

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
    summary = run_loadtest(opts, console(stderr=True))  # progress and Locust's own lines: diagnostics
    print_summary(summary, console())  # the result: stdout
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
    if summary.get("images"):  # images/s depends on their sizes: say which images the figures are for
        console.print(f"images: {summary['images']}", highlight=False)
    if summary.get("caution"):
        console.print(f"caution: {summary['caution']}", highlight=False)
    rough = [p["users"] for p in summary.get("by_users", []) if p.get("caution")]
    if rough:
        console.print(
            f"caution: the p99 at {', '.join(map(str, rough))} users rests on fewer than 100 requests each",
            highlight=False,
        )
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

"""`dfserve loadtest`: argument parsing only; the work is in `dfserve.loadtest.runner`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dfserve.commandline import checked, deprecated_alias, non_negative_float, positive_float, positive_int
from dfserve.loadtest.options import SHAPES, LoadSettings
from dfserve.measure.stats import parse_duration
from dfserve.spec.endpoints import PROTOCOLS, URL_HELP, default_url
from dfserve.spec.names import MODES


def register(subparsers: Any) -> None:
    _register_loadtest(subparsers)


def whole_seconds(text: str) -> int:
    """A duration in the shared syntax (`dfserve.measure.stats.parse_duration`), in whole seconds as Locust takes
    it."""
    seconds = parse_duration(text)
    if seconds != int(seconds):
        raise ValueError(f"duration {text!r} is not whole seconds, which Locust needs")
    return int(seconds)


def _register_loadtest(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "loadtest",
        help="run a Locust load test (headless) and write CSV, HTML, summary.json and a plot",
        description=(
            "Run dfserve's locustfile headless against a running server. Writes Locust's CSV and HTML report, "
            "summary.json and users.png (throughput and latency against users) into --out. "
            "--shape step adds --step-users every --step-time seconds up to --concurrency and reports the knee."
        ),
    )
    p.add_argument("--url", default=None, help=URL_HELP)
    p.add_argument(
        "--protocol", choices=PROTOCOLS, default=None, help="http or grpc (default: from the URL's scheme, else http)"
    )
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=4,
        metavar="N",
        help="Locust users, each with one request in flight (closed loop); with --shape step, the ceiling",
    )
    p.add_argument(
        "--spawn-rate", "-r", type=positive_float, default=2.0, help="users started per second while ramping up"
    )
    p.add_argument(
        "--duration",
        type=checked(whole_seconds, "duration"),
        default=None,
        metavar="DURATION",
        help="run length: 90, 30s, 2m, 1h30m (default: 30s; with --shape step, until the ramp stops)",
    )
    p.add_argument(
        "--mode", choices=MODES, default="file", help="file: encoded images to the ensemble; pixels: uint8 tensors"
    )
    p.add_argument(
        "--shape",
        choices=SHAPES,
        default="constant",
        help="constant: --concurrency users for --duration; step: start at --step-users, add --step-users every "
        "--step-time seconds up to --concurrency, stop --patience steps past the knee and report it",
    )
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="send these image files instead of generated ones (default: --image-count generated photo-like JPEGs)",
    )
    p.add_argument(
        "--image-count", type=positive_int, default=8, help="how many images to generate when --images is not given"
    )
    p.add_argument("--batch", type=positive_int, default=1, help="images per request")
    p.add_argument(
        "--model-name",
        default="",
        metavar="NAME",
        help="the served Triton model whose config carries the spec (default: the ensemble a build names, "
        "then the repository index)",
    )
    p.add_argument("--timeout", type=positive_float, default=60.0, help="seconds before a request counts as failed")
    p.add_argument("--step-users", type=positive_int, default=2, help="--shape step: users added at each step")
    p.add_argument("--step-time", type=positive_float, default=15.0, help="--shape step: seconds per step")
    p.add_argument(
        "--step-warmup",
        type=non_negative_float,
        default=3.0,
        help="--shape step: seconds at the start of each step left out of its figures",
    )
    p.add_argument(
        "--patience",
        type=positive_int,
        default=2,
        help="--shape step: steps in a row that do not grow before the ramp stops",
    )
    p.add_argument(
        "--processes", type=positive_int, default=1, help="Locust worker processes (more than 1: distributed mode)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: a new ./loadtest-<date>-<time>)",
    )
    p.add_argument("--quiet", action="store_true", help="do not echo Locust's console output")
    deprecated_alias(p, "--host", new="--url")
    deprecated_alias(p, "--users", "-u", new="--concurrency")
    deprecated_alias(p, "--run-time", "-t", new="--duration")
    deprecated_alias(p, "--model", new="--model-name")
    p.set_defaults(func=_loadtest)


def _loadtest(args: argparse.Namespace) -> int:
    import importlib.util

    from dfserve.loadtest.runner import LoadtestOptions, run_loadtest
    from dfserve.terminal import console

    if importlib.util.find_spec("locust") is None:  # Locust runs in a subprocess: ask before any folder is made
        raise ModuleNotFoundError("No module named 'locust'", name="locust")
    if args.duration is not None:
        run_time: str | None = f"{args.duration}s"
    else:
        run_time = None if args.shape == "step" else "30s"
    settings = LoadSettings(
        mode=args.mode,
        protocol=args.protocol or "http",
        images=str(args.images or ""),
        image_count=args.image_count,
        batch=args.batch,
        model=args.model_name,
        timeout=args.timeout,
        shape=args.shape,
        step_users=args.step_users,
        step_time=args.step_time,
        step_warmup=args.step_warmup,
        patience=args.patience,
    )
    opts = LoadtestOptions(
        host=args.url or default_url(args.protocol),
        users=args.concurrency,
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

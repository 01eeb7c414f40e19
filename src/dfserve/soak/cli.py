"""`dfserve soak`: argument parsing only; the work is in `dfserve.soak.run` and `dfserve.soak.report`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dfserve.commandline import (
    checked,
    default_out_dir,
    deprecated_alias,
    non_negative_float,
    positive_float,
    positive_int,
)
from dfserve.measure.stats import parse_duration
from dfserve.spec.endpoints import PROTOCOLS, URL_HELP, default_url
from dfserve.spec.names import MODES

DURATION = checked(parse_duration, "duration")
"""The duration syntax every command shares: 600, 90s, 10m, 1h30m."""


def _warmup(text: str) -> str:
    """A share (10%) or a duration (60s, 0), checked here; the run turns it into seconds of its --duration."""
    from dfserve.soak.drift import parse_warmup

    parse_warmup(text, 100.0)
    return text


def register(subparsers: Any) -> None:
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
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", default=None, help=URL_HELP.replace("(default: ", "(default without --repository: "))
    where.add_argument(
        "--repository",
        type=Path,
        default=None,
        metavar="DIR",
        help="serve this built repository here for the soak instead of loading a running server at --url "
        "(default: no repository, --url)",
    )
    p.add_argument(
        "--pid",
        type=positive_int,
        default=None,
        help="with --url: tritonserver's pid, for its memory (default: none, memory is not measured)",
    )
    p.add_argument(
        "--protocol", choices=PROTOCOLS, default=None, help="http or grpc (default: from the URL's scheme, else http)"
    )
    p.add_argument("--mode", choices=MODES, default="file", help="file: photographs to the ensemble; pixels: vit")
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=None,
        metavar="N",
        help="requests in flight, one closed-loop thread each (default: the knee of a short ramp)",
    )
    p.add_argument(
        "--duration",
        type=DURATION,
        default=parse_duration("10m"),
        metavar="DURATION",
        help="run length: 600, 90s, 10m, 1h30m (default: 10m)",
    )
    p.add_argument(
        "--window", type=DURATION, default=15.0, metavar="DURATION", help="length of one window (default: 15s)"
    )
    p.add_argument(
        "--warmup",
        type=checked(_warmup, "warm-up"),
        default="10%",
        help="not judged: a share of --duration (10%%) or a duration (60s) (default: 10%%)",
    )
    p.add_argument(
        "--max-growth",
        type=non_negative_float,
        default=5.0,
        help="percent of memory growth allowed after the warm-up",
    )
    p.add_argument("--timeout", type=positive_float, default=30.0, help="seconds per request, retries included")
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="send these image files instead of the sample photographs (default: the sample photographs)",
    )
    p.add_argument(
        "--ramp-step",
        type=DURATION,
        default=10.0,
        metavar="DURATION",
        help="least length of a ramp step, longer until it holds 40 requests (default: 10s)",
    )
    p.add_argument("--ramp-max", type=positive_int, default=32, help="most threads the ramp tries")
    p.add_argument(
        "--tritonserver",
        default=None,
        metavar="PATH",
        help="with --repository: the tritonserver binary (default: as `dfserve serve` finds it)",
    )
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output folder (default: a new ./soak-<date>-<time>)"
    )
    deprecated_alias(p, "-c", new="--concurrency")
    p.set_defaults(func=_soak)


def _soak(args: argparse.Namespace) -> int:
    from dfserve.soak.report import LiveDisplay, print_verdict, write_outputs
    from dfserve.soak.run import SoakOptions, run_soak
    from dfserve.terminal import console

    opts = SoakOptions(
        url=args.url if args.url or args.repository else default_url(args.protocol),
        repository=args.repository,
        pid=args.pid,
        protocol=args.protocol,
        mode=args.mode,
        concurrency=args.concurrency,
        duration_s=args.duration,
        window_s=args.window,
        warmup=args.warmup,
        timeout_s=args.timeout,
        max_growth_pct=args.max_growth,
        images=args.images,
        ramp_step_s=args.ramp_step,
        ramp_max=args.ramp_max,
        tritonserver=args.tritonserver,
    )
    out = (args.out or default_out_dir(prefix="soak")).expanduser().resolve()
    display = LiveDisplay(console(stderr=True))  # the live table and notes while it runs: diagnostics
    try:
        result = run_soak(opts, display)
    finally:
        display.finished()
    write_outputs(result, out)
    print_verdict(result, console())  # the verdict and the report's folder: the result, on stdout
    return 0 if result.verdict.passed else 1

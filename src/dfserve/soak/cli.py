"""`dfserve soak`: argument parsing only; the work is in `dfserve.soak.run` and `dfserve.soak.report`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dfserve.commandline import default_out_dir
from dfserve.measure.stats import parse_duration
from dfserve.spec.endpoints import PROTOCOLS
from dfserve.spec.names import MODES


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
    from dfserve.soak.report import LiveDisplay, print_verdict, write_outputs
    from dfserve.soak.run import SoakError, SoakOptions, run_soak
    from dfserve.terminal import console

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
    display = LiveDisplay(console(stderr=True))  # the live table and notes while it runs: diagnostics
    try:
        result = run_soak(opts, display)
    finally:
        display.finished()
    write_outputs(result, out)
    print_verdict(result, console())  # the verdict and the report's folder: the result, on stdout
    return 0 if result.verdict.passed else 1

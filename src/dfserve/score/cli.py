"""`dfserve score SOURCE --out RESULTS.parquet`: an offline scoring job, resumable, on one machine or on Ray.

Only argparse here: pyarrow, Ray and the SDK are imported when the command runs, so `dfserve --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dfserve.client._constants import DEFAULT_CONCURRENCY, DEFAULT_URL

ROWS_FAILED_EXIT = 1
"""Exit status when the job finished but OUT holds at least one row with an error."""
STOPPED_EXIT = 3
"""Exit status when the job stopped before the end for a reason that is not a file's (the server lost past the
retries, a model refused): the rows already committed are kept, and the same command continues."""


def register(subparsers: Any) -> None:

    parser = subparsers.add_parser(
        "score",
        help="score a folder or manifest of images into a Parquet file (resumable; one machine or Ray)",
        description="Score every image of SOURCE (a folder, searched recursively, or a manifest: one path or "
        "fsspec URL a line) with a running server and write one row per input to OUT (Parquet): path, sha256, "
        "label, scores, error, model, model_version, spec_id. Killed at any point, the same command continues "
        "where it stopped and in the end OUT has every input exactly once. Exits with status 1 if any row failed.",
    )
    parser.add_argument("source", metavar="SOURCE", help="folder, manifest file, or fsspec URL of either")
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="RESULTS.parquet",
        help="the Parquet file to write or continue (required; no default: a job names its results)",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="the server (host:port, http:// or grpc://)")
    parser.add_argument("--model", default=None, help="entry model whose config carries the spec (default: the spec's)")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight (and preprocessing threads)"
    )
    parser.add_argument(
        "--mode",
        choices=("pixels", "file"),
        default="pixels",
        help="pixels: decode and resize here, send pixels to the engine; file: send the files, the server decodes "
        "(--ray is always pixels)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that decode and resize (0: the threads do it; Pillow releases the GIL, so threads suffice "
        "for small images)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run as a Ray Data pipeline; without ADDRESS, start a local Ray (e.g. --ray ray://head:10001; "
        "default: off, one machine)",
    )
    parser.add_argument(
        "--ray-cpus", type=int, default=None, help="CPUs of a local Ray started by --ray (default: Ray's, all of them)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="--ray: images per Ray Data batch")
    parser.add_argument(
        "--ray-actors",
        type=int,
        default=1,
        help="--ray: actors sending to the server, each with --concurrency requests in flight",
    )
    parser.add_argument("--rows-per-part", type=int, default=None, help="commit a part every N rows (default 5000)")
    parser.add_argument(
        "--flush-seconds", type=float, default=None, help="commit a part at least this often (default 30)"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per request, retries included (default: the SDK's)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dfserve.score.sources import SourceError

    for name in ("concurrency", "batch_size", "rows_per_part", "ray_actors", "ray_cpus"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SourceError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.ray is not None and args.mode == "file":
        raise SourceError("--ray decodes on the Ray workers and sends pixels: --mode file does not apply")
    if args.workers < 0:
        raise SourceError(f"--workers must be 0 or more, got {args.workers}")
    import pyarrow.parquet  # noqa: F401  (without the extra, say so before any work: `dfserve.cli` names it)

    from dfserve.client import DfserveClientError

    console = Console(stderr=True)
    try:
        stats, summary = _run(args)
    except DfserveClientError as exc:
        parts = args.out.with_name(args.out.name + ".parts")
        kept = f"the rows already scored are kept in {parts}; " if parts.is_dir() and any(parts.iterdir()) else ""
        console.print(
            f"error: {exc}\nstopped: {kept}run the same command again to continue",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return STOPPED_EXIT
    console.print(
        f"this run: {stats.scored} scored, {stats.failed} failed, {stats.skipped} already done, "
        f"{stats.images_per_second:.1f} images/s; {args.out}: {summary.rows} rows, {summary.errors} with an error",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return ROWS_FAILED_EXIT if summary.errors else 0


def _run(args: argparse.Namespace) -> tuple[Any, Any]:
    """This run's statistics and what OUT holds, from the Ray pipeline or the single-machine run."""
    if args.ray is not None:
        from dfserve.score.ray_job import score_on_ray

        return score_on_ray(
            args.source,
            args.out,
            args.url,
            address=args.ray or None,
            num_cpus=args.ray_cpus,
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            actors=args.ray_actors,
            rows_per_part=args.rows_per_part,
            flush_seconds=args.flush_seconds,
            model=args.model,
            timeout=args.timeout,
        )
    from dfserve.score.run import score

    return score(
        args.source,
        args.out,
        args.url,
        concurrency=args.concurrency,
        workers=args.workers,
        mode=args.mode,
        rows_per_part=args.rows_per_part,
        flush_seconds=args.flush_seconds,
        progress=not args.no_progress,
        model=args.model,
        timeout=args.timeout,
    )

"""`dfserve bench gpu-decode`'s options and command line, apart from the work (`dfserve.bench.gpu_decode`) so that
`dfserve --help` imports no numpy, Pillow or torch."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

SIZES: dict[str, tuple[int, int] | None] = {
    "shipped": None,
    "1mp": (1152, 864),
    "3mp": (2048, 1536),
    "12mp": (4000, 3000),
}
"""Photograph sizes measured: the shipped photographs as they are, and resized variants."""

SECTION_SHARES = {"engine": 0.10, "decode": 0.15, "served_cpu": 0.35, "served_gpu": 0.40}
"""Each section's share of the time left when it starts (`--budget-s` in all)."""
SECTION_NAMES = tuple(SECTION_SHARES)


@dataclass
class Options:
    device: str = "cuda"
    model: str | None = None
    out: Path = Path("gpu-decode")
    budget_s: float = 420.0
    max_batch: int = 64
    head_scale: float = 30.0
    sizes: tuple[str, ...] = tuple(SIZES)
    photos_per_size: int = 8
    files_per_request: int = 8
    concurrency: int = 16
    preprocess_instances: int | None = None
    """--decode cpu `preprocess` instances (default: one per 4 cores of this host)."""
    preprocess_threads: int = 0
    sections: tuple[str, ...] = SECTION_NAMES
    precision: str | None = None
    """None: fp16 on CUDA, fp32 on the CPU."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Options()
    p.add_argument("--device", default=d.device, help="cuda, cuda:N or cpu (default %(default)s)")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the preset, random weights)")
    p.add_argument("--out", type=Path, default=d.out, help="output folder (default %(default)s)")
    p.add_argument("--budget-s", type=float, default=d.budget_s, help="total time budget (default %(default)s)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="served max batch (default %(default)s)")
    p.add_argument("--head-scale", type=float, default=d.head_scale, help="random head's scale (%(default)s)")
    p.add_argument("--sizes", default=",".join(d.sizes), help=f"photograph sizes among {', '.join(SIZES)}")
    p.add_argument("--photos-per-size", type=int, default=d.photos_per_size)
    p.add_argument("--files-per-request", type=int, default=d.files_per_request)
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="requests in flight (%(default)s)")
    p.add_argument("--preprocess-instances", type=int, default=None, help="--decode cpu instances (cores/4)")
    p.add_argument("--preprocess-threads", type=int, default=0, help="--decode cpu threads each (0: min(4, cores))")
    p.add_argument("--precision", choices=("fp32", "fp16"), default=None, help="default: fp16 on CUDA, else fp32")
    p.add_argument("--sections", default=",".join(SECTION_NAMES), help=f"subset of {', '.join(SECTION_NAMES)}")


def options_from(args: argparse.Namespace) -> Options:
    sizes = tuple(x.strip() for x in args.sizes.split(",") if x.strip())
    sections = tuple(x.strip() for x in args.sections.split(",") if x.strip())
    unknown = [x for x in sizes if x not in SIZES] + [x for x in sections if x not in SECTION_NAMES]
    if unknown:
        known = f"sizes: {list(SIZES)}, sections: {list(SECTION_NAMES)}"
        raise SystemExit(f"error: unknown sizes or sections {unknown}; {known}")
    return Options(
        device=args.device,
        model=args.model,
        out=args.out,
        budget_s=args.budget_s,
        max_batch=args.max_batch,
        head_scale=args.head_scale,
        sizes=sizes,
        photos_per_size=args.photos_per_size,
        files_per_request=args.files_per_request,
        concurrency=args.concurrency,
        preprocess_instances=args.preprocess_instances,
        preprocess_threads=args.preprocess_threads,
        sections=sections,
        precision=args.precision,
    )

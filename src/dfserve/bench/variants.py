"""What the bench measures, one `Variant` each: the Transformers pipeline, raw ONNX Runtime in this process, and the
served `vit` and `detector` through the SDK, each measured by the same closed loop (`closed_loop`) or timed loop
and run in alternating rounds (`run_rounds`) so that a machine that slows down affects every variant alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from rich.console import Console

from dfserve.client import Client
from dfserve.errors import BenchError
from dfserve.measure.closedloop import run_for
from dfserve.measure.processes import MemorySampler, process_tree_cpu
from dfserve.spec.model import ModelSpec, Precision
from dfserve.terminal import progress
from dfserve.triton.process import TritonServer


def onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


@dataclass
class Timing:
    """One timed window: images done, wall seconds, CPU seconds, per-call latencies (seconds)."""

    images: int
    seconds: float
    cpu_s: float
    latencies: list[float]


@dataclass
class Variant:
    name: str
    kind: str
    """pipeline, raw, vit or detector."""
    precision: Precision | None
    levels: tuple[int, ...]
    measure: Callable[[int, float], Timing]
    memory_bytes: Callable[[], int]
    memory_note: str
    windows: dict[int, list[Timing]] = field(default_factory=dict)


def closed_loop(call: Callable[[Any], Any], items: Sequence[Any], concurrency: int, seconds: float) -> Timing:
    """`concurrency` callers, one request after another, for `seconds` (`dfserve.measure.closedloop.run_for`); a
    bench that saw a failed request is not a measurement, so the first failure stops it."""
    run = run_for(call, items, concurrency, seconds)
    if run.failures:
        raise BenchError(f"a request failed at concurrency {concurrency}: {run.failures[0].message}")
    return Timing(run.requests, run.seconds, run.cpu_s, run.latencies_s)


def _timed_loop(step: Callable[[], int], seconds: float) -> Timing:
    """`step` (returns images done) again and again, at least once, until `seconds` have passed (the variant ran
    it once when it loaded: first calls allocate)."""
    latencies: list[float] = []
    images = 0
    cpu, start = time.process_time(), time.perf_counter()
    while not latencies or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        images += step()
        latencies.append(time.perf_counter() - t)
    return Timing(images, time.perf_counter() - start, time.process_time() - cpu, latencies)


def pipeline_variant(checkpoint: str, paths: Sequence[Path], batch: int) -> Variant:
    """The pipeline at batch size 1 and at `batch` (its best is what the ratios use, so the baseline is not
    handicapped by a batch size that does not suit it)."""
    from transformers import pipeline

    before = _rss()
    pipe = pipeline("image-classification", model=checkpoint, device="cpu")
    chunks = {b: [str(paths[i % len(paths)]) for i in range(b)] for b in sorted({1, batch})}
    for b, chunk in chunks.items():
        pipe(chunk, batch_size=b)
    loaded = _rss() - before

    def measure(b: int, seconds: float) -> Timing:
        def step() -> int:
            pipe(chunks[b], batch_size=b)
            return b

        return _timed_loop(step, seconds)

    return Variant(
        "pipeline",
        "pipeline",
        None,
        tuple(chunks),
        measure,
        lambda: loaded,
        "added to this process by loading and one call per batch size",
    )


def raw_variant(
    precision: Precision, spec: ModelSpec, onnx: Path, pixels: np.ndarray, levels: Sequence[int]
) -> Variant:
    before = _rss()
    session = onnx_session(onnx)
    feeds = {c: {spec.tensors.pixels: np.resize(pixels, (c, *pixels.shape[1:]))} for c in levels}
    for feed in feeds.values():
        session.run(None, feed)
    loaded = _rss() - before

    def measure(c: int, seconds: float) -> Timing:
        def step() -> int:
            session.run(None, feeds[c])
            return c

        return _timed_loop(step, seconds)

    return Variant(
        f"raw_{precision}",
        "raw",
        precision,
        tuple(levels),
        measure,
        lambda: loaded,
        "added to this process by the session and one run per batch size",
    )


@dataclass
class ServedPair:
    """One server (one precision) with its two SDK clients and its memory sampler."""

    precision: Precision
    spec: ModelSpec
    server: Any
    pixels_client: Any
    files_client: Any
    peak_rss: int = 0
    idle_rss: int = 0


def served_variants(
    pair: ServedPair, engine_inputs: Sequence[np.ndarray], files: Sequence[bytes], levels: Sequence[int]
) -> list[Variant]:

    pid = pair.server.pid
    assert pid is not None

    def measured(client: Any, items: Sequence[Any]) -> Callable[[int, float], Timing]:
        warmed: set[int] = set()

        def measure(c: int, seconds: float) -> Timing:
            if c not in warmed:  # opens the connections, once per level
                warm = [items[i % len(items)] for i in range(c)]
                client.classify_many(warm, concurrency=c, raise_on_error=True)
                warmed.add(c)
            server_cpu = process_tree_cpu(pid)
            with MemorySampler(pid) as mem:
                window = closed_loop(client.classify, items, c, seconds)
            pair.peak_rss = max(pair.peak_rss, mem.peak)
            window.cpu_s += process_tree_cpu(pid) - server_cpu
            return window

        return measure

    note = "tritonserver and its Python stubs, peak while measured (the server holds both models)"
    return [
        Variant(
            f"vit_{pair.precision}",
            "vit",
            pair.precision,
            tuple(levels),
            measured(pair.pixels_client, engine_inputs),
            lambda: pair.peak_rss,
            note,
        ),
        Variant(
            f"detector_{pair.precision}",
            "detector",
            pair.precision,
            tuple(levels),
            measured(pair.files_client, files),
            lambda: pair.peak_rss,
            note,
        ),
    ]


def sdk_client(url: str, mode: str, pool_size: int = 16) -> Any:

    return Client(url, "http", mode=cast(Any, mode), timeout=600.0, pool_size=pool_size)  # mode checked by Client


def start_server(repo: Path) -> Any:

    return TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0)


def run_rounds(variants: Sequence[Variant], rounds: int, seconds: float, console: Console) -> None:
    """Every variant at every level once per round, the variants' order rotating from round to round; progress
    over the windows (rounds × variants × levels) with the time left, on `console` (stderr)."""
    total = rounds * sum(len(v.levels) for v in variants)
    with progress("bench: measurement windows", total, unit="windows", out=console) as bar:
        for r in range(rounds):
            order = list(variants[r % len(variants) :]) + list(variants[: r % len(variants)])
            for v in order:
                for c in v.levels:
                    w = v.measure(c, seconds)
                    v.windows.setdefault(c, []).append(w)
                    console.print(
                        f"    round {r + 1}/{rounds} {v.name:<14} c={c:<3} {w.images / w.seconds:8.2f} images/s "
                        f"({w.images} images, CPU {w.cpu_s / max(w.images, 1):.3f} s/image)"
                    )
                    bar.advance()

"""`dfserve bench`: the served stack against the raw engine, side by side, in one run on one machine.

Sections, in the order they run (CPU-only work first, so the server's processes do not compete with it):

1. raw engine: the built ONNX graph in ONNX Runtime, in this process, images/s at batch sizes 1 .. max batch;
4. preprocessing: dfserve's modes against the checkpoint's Transformers processor (`bench_preprocess`);
2. served engine: the same graph served by Triton (`vit`, uint8 pixels) through dfserve's SDK, at a
   concurrency sweep of single-image requests (Triton's dynamic batcher forms the batches);
3. the whole `detector` ensemble with JPEG files, through the SDK;
5. Triton's own statistics per model (queue, compute input, compute infer, compute output) for sections 2 and 3,
   and the server's memory (RSS of tritonserver and its Python stubs) at idle and under load for each max
   batch size (a repository per size, written from the same ONNX graph by the repository writer).

Every measurement is a fixed number of timed repetitions after one untimed warm-up; the JSON records them.
Goals are reported, never asserted: served `vit` >= 0.9x raw at saturation, dfserve preprocessing >= 1.5x the
Transformers processor.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
from rich.console import Console

from dfserve.config import DEFAULT_MODEL_ID, Batching, ModelSpec
from dfserve.loadtest.errors import BenchError
from dfserve.loadtest.payloads import EncodedImage, load_images, to_pixels
from dfserve.names import ONNX_FILENAME

GOAL_SERVED_RATIO = 0.9
GOAL_PREPROCESS_RATIO = 1.5


@dataclass
class BenchOptions:
    model: str | None = None
    """Checkpoint folder or hub id; None: the default model's architecture with random weights."""
    repository: Path | None = None
    """An already built repository (target python or container, with vit/1/model.onnx): skips the build."""
    random_weights: bool = False
    max_batch: int = 8
    memory_batches: tuple[int, ...] | None = None
    """Max batch sizes for the memory section; None: 1, half the max batch, the max batch."""
    concurrency: tuple[int, ...] | None = None
    """Concurrency sweep of the served engine; None: 1, 2, 4, ... up to 2 x max batch."""
    detector_concurrency: tuple[int, ...] | None = None
    """Concurrency sweep of the ensemble; None: 1, max batch, 2 x max batch."""
    repeats: int = 5
    images: Path | None = None
    image_count: int = 8
    out: Path | None = None
    parity_photos: int = 4

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise BenchError(f"max batch must be at least 1, got {self.max_batch}")
        if self.repeats < 1:
            raise BenchError(f"repeats must be at least 1, got {self.repeats}")
        if self.image_count < 1:
            raise BenchError(f"image count must be at least 1, got {self.image_count}")
        if self.repository is not None and self.model is not None:
            raise BenchError("give either --repository (already built) or --model (to build), not both")


@dataclass
class BenchResult:
    data: dict[str, Any]
    markdown: str
    out: Path
    files: dict[str, str] = field(default_factory=dict)


def powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... up to `limit`, with `limit` itself last."""
    values, v = [], 1
    while v < limit:
        values.append(v)
        v *= 2
    return [*values, limit]


def _default_out() -> Path:
    return Path.cwd() / f"bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _batching(max_batch: int, template: Batching | None = None) -> Batching:
    base = template or Batching()
    preferred = tuple(b for b in powers_of_two(max_batch) if b > 1) or (max_batch,)
    return base.model_copy(
        update={
            "max_batch_size": max_batch,
            "preferred_batch_sizes": preferred,
            "preprocess_max_batch_size": min(base.preprocess_max_batch_size, max(max_batch, 1)),
        }
    )


# ------------------------------------------------------------------------------------------------ model


def prepare_repository(opts: BenchOptions, out: Path, console: Console) -> tuple[ModelSpec, Path, Path, dict]:
    """(spec, repository, onnx path, build report): the given repository, or a fresh python-target build."""
    if opts.repository is not None:
        repo = opts.repository.expanduser().resolve()
        try:
            spec = ModelSpec.load(repo)
        except FileNotFoundError as exc:
            raise BenchError(f"{repo} is not a built repository (no dfserve.json)") from exc
        onnx = repo / spec.models.engine / "1" / ONNX_FILENAME
        if not onnx.is_file():
            raise BenchError(f"{onnx} is missing: the bench needs the ONNX graph (a python or container build)")
        report_file = repo / "build_report.json"
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
        return spec, repo, onnx, report
    from dfserve.export.pipeline import BuildOptions, build

    random_weights = opts.random_weights or opts.model is None
    result = build(
        BuildOptions(
            out=out / "repository",
            model=opts.model or DEFAULT_MODEL_ID,
            random_weights=random_weights,
            target="python",
            batching=_batching(opts.max_batch),
            parity_photos=opts.parity_photos,
        ),
        console,
    )
    return result.spec, result.out_dir, result.onnx_path, result.report


def onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------------ section 1


def raw_point(session: Any, spec: ModelSpec, pixels: Sequence[np.ndarray], bs: int, repeats: int) -> dict[str, Any]:
    """One batch size: wall-clock images/s and latency, and CPU seconds per image (all of ONNX Runtime's threads
    run in this process, so `process_time` sees them). CPU time per image hardly moves when other programs
    compete for the cores; wall-clock throughput does."""
    batch = np.stack([pixels[i % len(pixels)] for i in range(bs)])
    feed = {spec.tensors.pixels: batch}
    session.run([spec.tensors.scores], feed)  # warm-up
    times = []
    cpu = time.process_time()
    for _ in range(repeats):
        t = time.perf_counter()
        session.run([spec.tensors.scores], feed)
        times.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu
    return {
        "batch": bs,
        "images_per_s": bs * repeats / sum(times),
        "latency_ms": 1000 * float(np.median(times)),
        "cpu_s_per_image": cpu / (bs * repeats),
        "repeats": repeats,
    }


def bench_raw(session: Any, spec: ModelSpec, pixels: Sequence[np.ndarray], max_batch: int, repeats: int) -> dict:
    """ONNX Runtime in process at batch sizes 1 .. max batch (default intra-op threads, as in the server)."""
    rows = [raw_point(session, spec, pixels, bs, repeats) for bs in powers_of_two(max_batch)]
    best = max(rows, key=lambda r: r["images_per_s"])
    return {
        "rows": rows,
        "best_images_per_s": best["images_per_s"],
        "best_batch": best["batch"],
        "best_cpu_s_per_image": min(r["cpu_s_per_image"] for r in rows),
    }


# ------------------------------------------------------------------------------------------------ sections 2, 3


def _sweep(
    name: str,
    classify_many: Callable[[list[Any], int], list[Any]],
    items: Sequence[Any],
    levels: Sequence[int],
    repeats: int,
    server_pid: int,
    console: Console,
) -> list[dict[str, Any]]:
    """`repeats` x concurrency requests per level: wall-clock images/s, and the CPU seconds per image that the
    server (tritonserver and its stubs) and this client spent."""
    from dfserve.bench.serverstats import process_tree_cpu

    rows = []
    for c in levels:
        n = c * repeats
        batch = [items[i % len(items)] for i in range(n)]
        client_cpu, server_cpu = time.process_time(), process_tree_cpu(server_pid)
        t = time.perf_counter()
        results = classify_many(batch, c)
        elapsed = time.perf_counter() - t
        client_cpu, server_cpu = time.process_time() - client_cpu, process_tree_cpu(server_pid) - server_cpu
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise BenchError(f"{name}: {len(failed)} of {n} requests failed at concurrency {c}: {failed[0]}")
        rows.append(
            {
                "concurrency": c,
                "requests": n,
                "images_per_s": n / elapsed,
                "seconds": round(elapsed, 3),
                "server_cpu_s_per_image": server_cpu / n,
                "client_cpu_s_per_image": client_cpu / n,
            }
        )
        console.print(
            f"    {name} concurrency {c:>3}: {n / elapsed:7.2f} images/s ({n} requests; CPU s/image: server "
            f"{server_cpu / n:.3f}, client {client_cpu / n:.3f})"
        )
    return rows


def _client(url: str, mode: str) -> Any:
    from dfserve.client import Client

    return Client(url, "http", mode=cast(Any, mode), timeout=600.0)  # checked by Client


def _server(repo: Path) -> Any:
    from dfserve.triton.server import TritonServer

    return TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0)


def bench_served(
    opts: BenchOptions,
    spec: ModelSpec,
    repo: Path,
    images: Sequence[EncodedImage],
    engine_inputs: Sequence[np.ndarray],
    console: Console,
) -> dict[str, Any]:
    """Sections 2, 3 and the main server's part of 5."""
    from dfserve.bench.serverstats import MemorySampler, inference_statistics, process_tree_rss, stats_delta

    mb = spec.batching.max_batch_size
    levels = list(opts.concurrency or powers_of_two(2 * mb))
    det_levels = list(opts.detector_concurrency or sorted({1, mb, 2 * mb}))
    models = [spec.models.ensemble, spec.models.preprocess, spec.models.engine]
    server = _server(repo)
    t = time.perf_counter()
    server.start(timeout=300)
    started_s = time.perf_counter() - t
    try:
        assert server.pid is not None
        time.sleep(1.0)
        idle = process_tree_rss(server.pid)
        pixels_client = _client(server.http_url, "pixels")
        files_client = _client(server.http_url, "file")
        try:
            warm = [engine_inputs[i % len(engine_inputs)] for i in range(mb)]
            pixels_client.classify_many(warm, concurrency=mb, raise_on_error=True)
            before = inference_statistics(server.http_url, models)
            with MemorySampler(server.pid) as vit_mem:
                vit_rows = _sweep(
                    spec.models.engine,
                    lambda items, c: pixels_client.classify_many(items, concurrency=c),
                    engine_inputs,
                    levels,
                    opts.repeats,
                    server.pid,
                    console,
                )
            vit_after = inference_statistics(server.http_url, models)
            files = [img.data for img in images]
            files_client.classify_many(files[:1], concurrency=1, raise_on_error=True)
            middle = inference_statistics(server.http_url, models)
            with MemorySampler(server.pid) as det_mem:
                det_rows = _sweep(
                    spec.models.ensemble,
                    lambda items, c: files_client.classify_many(items, concurrency=c),
                    files,
                    det_levels,
                    opts.repeats,
                    server.pid,
                    console,
                )
            after = inference_statistics(server.http_url, models)
        finally:
            pixels_client.close()
            files_client.close()
    finally:
        server.stop()
    return {
        "server_start_s": round(started_s, 1),
        "vit": {
            "rows": vit_rows,
            "best_images_per_s": max(r["images_per_s"] for r in vit_rows),
            "best_server_cpu_s_per_image": min(r["server_cpu_s_per_image"] for r in vit_rows),
            "triton": {spec.models.engine: stats_delta(before[spec.models.engine], vit_after[spec.models.engine])},
        },
        "detector": {
            "rows": det_rows,
            "best_images_per_s": max(r["images_per_s"] for r in det_rows),
            "triton": {m: stats_delta(middle[m], after[m]) for m in models},
        },
        "memory": {
            "max_batch": mb,
            "idle_bytes": idle,
            "vit_load_bytes": vit_mem.peak,
            "detector_load_bytes": det_mem.peak,
        },
    }


def bench_memory(
    spec: ModelSpec,
    onnx: Path,
    work: Path,
    max_batch: int,
    engine_inputs: Sequence[np.ndarray],
    repeats: int,
    console: Console,
) -> dict[str, Any]:
    """Server RSS at idle and while `vit` runs full batches, for a repository with this max batch size."""
    from dfserve.bench.serverstats import (
        MemorySampler,
        inference_statistics,
        process_count,
        process_tree_rss,
        stats_delta,
    )
    from dfserve.triton.writer import write_repository

    variant = spec.model_copy(update={"batching": _batching(max_batch, spec.batching)})
    repo = write_repository(variant, work / f"repository-mb{max_batch}", target="python", onnx_path=onnx)
    server = _server(repo)
    server.start(timeout=300)
    try:
        assert server.pid is not None
        time.sleep(1.0)
        idle = process_tree_rss(server.pid)
        processes = process_count(server.pid)
        client = _client(server.http_url, "pixels")
        try:
            items = [engine_inputs[i % len(engine_inputs)] for i in range(max_batch * max(repeats, 2))]
            before = inference_statistics(server.http_url, [spec.models.engine])[spec.models.engine]
            with MemorySampler(server.pid) as mem:
                client.classify_many(items, concurrency=max_batch, raise_on_error=True)
            after = inference_statistics(server.http_url, [spec.models.engine])[spec.models.engine]
        finally:
            client.close()
    finally:
        server.stop()
    delta = stats_delta(before, after)
    console.print(
        f"    max batch {max_batch:>3}: idle {idle / 2**20:.0f} MiB, under load {mem.peak / 2**20:.0f} MiB "
        f"(avg batch {delta['avg_batch']})"
    )
    return {
        "max_batch": max_batch,
        "idle_bytes": idle,
        "load_bytes": mem.peak,
        "growth_bytes": mem.peak - idle,
        "avg_batch": delta["avg_batch"],
        "executions_by_batch": delta["executions_by_batch"],
        "requests": len(items),
        "processes": processes,
    }


# ------------------------------------------------------------------------------------------------ run


def run_bench(opts: BenchOptions, console: Console | None = None) -> BenchResult:
    from dfserve.bench.preprocess import bench_preprocessing
    from dfserve.bench.report import plot_bench, render_markdown

    console = console or Console(stderr=True)
    out = (opts.out or _default_out()).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(key: str, since: float) -> float:
        timings[key] = round(time.perf_counter() - since, 1)
        return time.perf_counter()

    load_at_start = list(os.getloadavg())
    images = load_images(opts.images, count=opts.image_count)
    console.print(f"[bold]dfserve bench[/] -> {out} ({len(images)} images, {opts.repeats} repetitions per point)")
    t = time.perf_counter()
    spec, repo, onnx, build_report = prepare_repository(opts, out, console)
    t = lap("build", t)
    mb = spec.batching.max_batch_size
    pixels = to_pixels(images, spec, spec.resize_mode)
    # the SDK's pixels mode takes images and preprocesses them itself: hand it arrays already at the engine's
    # input size, so its share of the work is a resize of the crop region only
    engine_inputs = [np.ascontiguousarray(p.transpose(1, 2, 0)) for p in pixels]

    console.print("[bold]1. raw engine[/] (ONNX Runtime in process)")
    sessions = [onnx_session(onnx)]  # dropped before the server starts, so it does not hold memory meanwhile
    raw = bench_raw(sessions[0], spec, pixels, mb, opts.repeats)
    for row in raw["rows"]:
        console.print(f"    batch {row['batch']:>3}: {row['images_per_s']:7.2f} images/s")
    t = lap("raw", t)

    console.print("[bold]4. preprocessing[/] (dfserve vs the Transformers processor, one core)")

    def run_model(batch: np.ndarray) -> np.ndarray:
        scores = sessions[0].run([spec.tensors.scores], {spec.tensors.pixels: batch})[0]
        return np.asarray(scores, dtype=np.float64)

    prep = bench_preprocessing(spec, images, opts.repeats, run_model)
    for name, row in prep["methods"].items():
        console.print(f"    {name:>12}: {row['images_per_s']:7.2f} images/s ({row['speedup']:.2f}x)")
    sessions.clear()
    t = lap("preprocessing", t)

    console.print(f"[bold]2-3. served[/] (Triton, SDK over HTTP; {repo})")
    served = bench_served(opts, spec, repo, images, engine_inputs, console)
    t = lap("served", t)

    console.print("[bold]5. server memory per max batch size[/]")
    memory_rows = []
    for size in opts.memory_batches or sorted({1, max(mb // 2, 1), mb}):
        memory_rows.append(bench_memory(spec, onnx, out, size, engine_inputs, opts.repeats, console))
    t = lap("memory", t)

    # the machine may be busier or quieter now than when section 1 ran: measure the raw engine's best batch again
    # so that the served / raw ratio can be read against both
    recheck = raw_point(onnx_session(onnx), spec, pixels, raw["best_batch"], opts.repeats)
    raw["recheck"] = recheck
    console.print(f"[bold]1'. raw engine again[/] batch {recheck['batch']}: {recheck['images_per_s']:.2f} images/s")
    t = lap("raw_recheck", t)

    raw_best = raw["best_images_per_s"]
    served_best = served["vit"]["best_images_per_s"]
    prep_rows = prep["methods"]
    data: dict[str, Any] = {
        "model": {
            "source": spec.source,
            "architecture": spec.architecture,
            "random_weights": spec.random_weights,
            "input_hw": list(spec.input_hw),
            "labels": list(spec.labels.names),
            "max_batch": mb,
            "resize_mode": spec.resize_mode,
            "repository": str(repo),
            "onnx_bytes": onnx.stat().st_size,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": list(os.getloadavg()),
        },
        "repeats": opts.repeats,
        "images": [img.describe() for img in images],
        "raw": raw,
        "served": served,
        "preprocessing": prep,
        "memory": memory_rows,
        "ratios": {
            "served_over_raw": _ratio(served_best, raw_best),
            "served_over_raw_recheck": _ratio(served_best, recheck["images_per_s"]),
            "raw_cpu_over_served_cpu_per_image": _ratio(
                raw["best_cpu_s_per_image"], served["vit"]["best_server_cpu_s_per_image"]
            ),
            "detector_over_raw": _ratio(served["detector"]["best_images_per_s"], raw_best),
            **{f"{m}_over_reference": prep_rows[m]["speedup"] for m in prep_rows if m != "transformers"},
        },
        "goals": {
            "served_vit_ge_0.9x_raw": served_best >= GOAL_SERVED_RATIO * raw_best,
            "preprocessing_box_ge_1.5x_transformers": prep_rows["box"]["speedup"] >= GOAL_PREPROCESS_RATIO,
        },
        "build": build_report.get("timings_s"),
        "timings_s": timings,
    }
    timings["total"] = round(time.perf_counter() - t0, 1)
    markdown = render_markdown(data)
    files = {
        "json": str(out / "bench.json"),
        "markdown": str(out / "bench.md"),
        "png": str(out / "bench.png"),
    }
    data["files"] = files
    (out / "bench.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / "bench.md").write_text(markdown)
    plot_bench(data, out / "bench.png")
    console.print(f"[bold green]bench done[/] in {timings['total']:.0f} s: {out}")
    return BenchResult(data=data, markdown=markdown, out=out, files=files)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """A ratio, or None where the denominator is missing or too small to measure (tiny models, coarse clocks)."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator

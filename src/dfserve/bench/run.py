"""`dfserve bench`: what a user would write against the served stack, side by side, in one run on one machine.

Variants, all on the same JPEG files (written to the output folder):

- `pipeline`: the Transformers `pipeline("image-classification", model=CKPT)` in this process, the baseline a
  user writes in two lines, at `pipeline_batch` images per call;
- `raw_fp32`, `raw_int8`: the built ONNX graphs in ONNX Runtime in this process, at batch c for each level c;
- `vit_fp32`, `vit_int8`: the graphs served by Triton, uint8 pixels through dfserve's SDK, c concurrent
  single-image requests (Triton's dynamic batcher forms the batches);
- `detector_fp32`, `detector_int8`: the whole ensemble with the encoded files through the SDK.

Two servers (the FP32 and the INT8 repository) run at once on free ports; each is idle (ONNX Runtime does not
spin in the server) while another variant runs. Rounds alternate: every round measures every variant at every
level for `seconds`, in a rotating order, so that other work on a shared machine hits all variants alike;
images/s are medians over rounds, latency percentiles pool every request, CPU seconds per image are totals (this
process for in-process variants; the server's process tree plus this client for served ones).

Then, as before: dfserve's preprocessing against the Transformers processor (`bench_preprocess`), Triton's own
statistics, and the server's resident memory per max batch size, for FP32 and INT8. Goals are reported, met or
not, never asserted (`GOALS`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from dfserve.bench.options import GOAL_INT8_OVER_FP32, GOAL_SERVED_RATIO, BenchOptions
from dfserve.bench.preprocess import bench_preprocessing
from dfserve.bench.report import plot_bench, render_markdown
from dfserve.bench.variants import (
    ServedPair,
    Variant,
    onnx_session,
    pipeline_variant,
    raw_variant,
    run_rounds,
    sdk_client,
    served_variants,
    start_server,
)
from dfserve.engine.cpu import read_host
from dfserve.errors import BenchError
from dfserve.export.checkpoint import save_random_checkpoint
from dfserve.export.pipeline import BuildOptions, build
from dfserve.export.policy import DEFAULT_MODEL_ID, DEFAULT_PROCESSOR_CONFIG, DEFAULT_VIT_CONFIG
from dfserve.measure.payloads import load_images, to_pixels
from dfserve.measure.processes import MemorySampler, process_count, process_tree_rss
from dfserve.measure.serverstats import inference_statistics, stats_delta
from dfserve.measure.stats import percentile
from dfserve.repository.writer import write_repository
from dfserve.spec.model import BuildHost, ModelSpec, Precision
from dfserve.spec.names import ONNX_FILENAME
from dfserve.terminal import console as make_console

PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")
GOAL_OVER_PIPELINE = 2.5
GOAL_PREPROCESS_RATIO = 1.5


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


def served_over_raw(served: dict[int, float], raw: dict[int, float]) -> dict[int, float]:
    """served(c) / the best raw batch size up to c: c concurrent single-image requests can at most form batches of
    c, and the raw engine is what a caller would get by batching in their own process."""
    out = {}
    for c, value in served.items():
        reference = max((v for b, v in raw.items() if b <= c), default=0.0)
        if reference > 0:
            out[c] = value / reference
    return out


def _default_out() -> Path:
    return Path.cwd() / f"bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ------------------------------------------------------------------------------------------------ models


def _load_repository(repo: Path) -> tuple[ModelSpec, Path, Path]:
    repo = repo.expanduser().resolve()
    try:
        spec = ModelSpec.load(repo)
    except FileNotFoundError as exc:
        raise BenchError(f"{repo} is not a built repository (no dfserve.json)") from exc
    onnx = repo / spec.models.engine / "1" / ONNX_FILENAME
    if not onnx.is_file():
        raise BenchError(f"{onnx} is missing: the bench needs the ONNX graph (a python or container build)")
    return spec, repo, onnx


def prepare_checkpoint(opts: BenchOptions, out: Path) -> tuple[str, bool]:
    """(checkpoint for the pipeline and the builds, whether its weights are random)."""
    if opts.model is not None:
        return opts.model, opts.random_weights

    folder = save_random_checkpoint(
        out / "checkpoint", config=DEFAULT_VIT_CONFIG, processor_config=DEFAULT_PROCESSOR_CONFIG, seed=0
    )
    return str(folder), True


def prepare_repositories(
    opts: BenchOptions, checkpoint: str, random_weights: bool, out: Path, console: Console
) -> dict[Precision, tuple[ModelSpec, Path, Path]]:
    """(spec, repository, onnx graph) per precision: the given repositories, or fresh python-target builds with
    the CPU defaults of each precision (`dfserve.export.policy.default_batching`)."""

    given = {"fp32": opts.repository, "int8": opts.int8_repository}
    result: dict[Precision, tuple[ModelSpec, Path, Path]] = {}
    for precision in PRECISIONS:
        repo = given[precision]
        if repo is None:
            built = build(
                BuildOptions(
                    out=out / f"repository-{precision}",
                    model=checkpoint or DEFAULT_MODEL_ID,
                    random_weights=random_weights,
                    target="python",
                    precision=precision,
                    parity_photos=opts.parity_photos,
                ),
                console,
            )
            repo = built.out_dir
        spec, repo, onnx = _load_repository(repo)
        if spec.precision != precision:
            raise BenchError(f"{repo} is a {spec.precision} build; the bench needs {precision} there")
        result[precision] = (spec, repo, onnx)
    return result


# ------------------------------------------------------------------------------------------------ variants


def summarise(v: Variant) -> dict[str, Any]:
    rows = []
    for c, windows in sorted(v.windows.items()):
        lat = sorted(x * 1000 for w in windows for x in w.latencies)
        images = sum(w.images for w in windows)
        rows.append(
            {
                "level": c,
                "images_per_s": statistics.median(w.images / w.seconds for w in windows),
                "rounds": [round(w.images / w.seconds, 3) for w in windows],
                "p50_ms": percentile(lat, 0.50),
                "p99_ms": percentile(lat, 0.99),
                "cpu_s_per_image": sum(w.cpu_s for w in windows) / images,
                "images": images,
            }
        )
    best = max(rows, key=lambda r: float(r["images_per_s"]))  # type: ignore[arg-type]
    return {
        "kind": v.kind,
        "precision": v.precision,
        "rows": rows,
        "best_images_per_s": best["images_per_s"],
        "best_level": best["level"],
        "memory_bytes": v.memory_bytes(),
        "memory_note": v.memory_note,
    }


def _dump(record: BuildHost | None) -> dict[str, Any] | None:
    return record.model_dump() if record else None


def ratios_and_goals(
    variants: dict[str, dict[str, Any]], int8_instructions: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every ratio and goal from the summarised variants, so a saved bench.json re-derives them. The INT8 goal
    holds on a CPU with INT8 instructions (VNNI, AMX, ARM dot products: `int8_instructions`); without them INT8 is
    not expected to gain (1.01-1.04x measured on AVX2), `--precision auto` serves FP32, and the ratio is reported."""

    def best(name: str) -> float:
        return float(variants[name]["best_images_per_s"])

    def by_level(name: str) -> dict[int, float]:
        return {int(r["level"]): float(r["images_per_s"]) for r in variants[name]["rows"]}

    pipeline = best("pipeline")
    ratios: dict[str, Any] = {"over_pipeline": {}, "over_raw": {}, "vit_over_raw_by_concurrency": {}}
    for name, v in variants.items():
        ratios["over_pipeline"][name] = best(name) / pipeline if pipeline else None
        if v["kind"] in ("vit", "detector"):
            raw = best(f"raw_{v['precision']}")
            ratios["over_raw"][name] = best(name) / raw if raw else None
    for p in PRECISIONS:
        by_c = served_over_raw(by_level(f"vit_{p}"), by_level(f"raw_{p}"))
        ratios["vit_over_raw_by_concurrency"][p] = {str(c): r for c, r in by_c.items()}  # JSON's keys are strings
    det_int8_over_fp32 = best("detector_int8") / best("detector_fp32")

    def goal(text: str, value: float | None, target: float | None) -> dict[str, Any]:
        met = None if target is None or value is None else value >= target
        return {"goal": text, "value": value, "target": target, "met": met}

    goals = [
        goal("served detector INT8 / served detector FP32", det_int8_over_fp32, GOAL_INT8_OVER_FP32)
        if int8_instructions
        else goal("served detector INT8 / FP32 (no VNNI/AMX here: auto serves FP32)", det_int8_over_fp32, None)
    ]
    for p in PRECISIONS:
        by_c = ratios["vit_over_raw_by_concurrency"][p]
        goals.append(
            goal(
                f"served vit {p.upper()} / raw {p.upper()}, worst of concurrency {','.join(map(str, by_c))}",
                min(by_c.values()) if by_c else None,
                GOAL_SERVED_RATIO,
            )
        )
    goals.append(
        goal(
            "served detector INT8 / Transformers pipeline", ratios["over_pipeline"]["detector_int8"], GOAL_OVER_PIPELINE
        )
    )
    goals.append(
        goal("served detector FP32 / Transformers pipeline (beside it)", ratios["over_pipeline"]["detector_fp32"], None)
    )
    return ratios, goals


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

    batching = spec.batching.model_copy(
        update={"max_batch_size": max_batch, "preferred_batch_sizes": spec.batching.preferred_for(max_batch)}
    )
    variant = spec.model_copy(update={"batching": batching})
    repo = write_repository(
        variant, work / f"repository-{spec.precision}-mb{max_batch}", target="python", onnx_path=onnx
    )
    server = start_server(repo)
    server.start(timeout=300)
    try:
        assert server.pid is not None
        time.sleep(1.0)
        idle = process_tree_rss(server.pid)
        processes = process_count(server.pid)
        client = sdk_client(server.http_url, "pixels")
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
        f"    {spec.precision} max batch {max_batch:>3}: idle {idle / 2**20:.0f} MiB, "
        f"under load {mem.peak / 2**20:.0f} MiB (avg batch {delta['avg_batch']})"
    )
    return {
        "precision": spec.precision,
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

    console = console or make_console(stderr=True)
    out = (opts.out or _default_out()).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(key: str, since: float) -> float:
        timings[key] = round(time.perf_counter() - since, 1)
        return time.perf_counter()

    load_at_start = list(os.getloadavg())
    images = load_images(opts.images, count=opts.image_count)
    image_dir = out / "images"
    image_dir.mkdir(exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = image_dir / f"{i:03d}-{Path(img.name).name}"
        path.write_bytes(img.data)
        paths.append(path)
    console.print(
        f"[bold]dfserve bench[/] -> {out} ({len(images)} images, {opts.rounds} rounds of {opts.seconds} s windows)"
    )
    t = time.perf_counter()
    checkpoint, random_weights = prepare_checkpoint(opts, out)
    models = prepare_repositories(opts, checkpoint, random_weights, out, console)
    t = lap("build", t)
    spec = models["fp32"][0]
    levels = opts.concurrency
    pixels = np.stack(to_pixels(images, spec, spec.resize_mode))
    # the SDK's pixels mode takes images and preprocesses them itself: hand it arrays already at the engine's
    # input size, so its share of the work is a resize of the crop region only
    engine_inputs = [np.ascontiguousarray(p.transpose(1, 2, 0)) for p in pixels]
    files = [img.data for img in images]

    console.print("[bold]preprocessing[/] (dfserve vs the Transformers processor, one core)")
    sessions = [onnx_session(models["fp32"][2])]  # dropped before the rounds, so it holds no memory meanwhile

    def run_model(batch: np.ndarray) -> np.ndarray:
        scores = sessions[0].run([spec.tensors.scores], {spec.tensors.pixels: batch})[0]
        return np.asarray(scores, dtype=np.float64)

    prep = bench_preprocessing(spec, images, opts.repeats, run_model)
    sessions.clear()
    t = lap("preprocessing", t)

    console.print("[bold]side by side[/] (alternating rounds)")
    variants = [pipeline_variant(checkpoint, paths, opts.pipeline_batch)]
    variants += [raw_variant(p, models[p][0], models[p][2], pixels, levels) for p in PRECISIONS]
    pairs: list[ServedPair] = []
    try:
        for p in PRECISIONS:
            server = start_server(models[p][1])
            server.start(timeout=600)
            pair = ServedPair(
                p,
                models[p][0],
                server,
                sdk_client(server.http_url, "pixels", max(levels)),
                sdk_client(server.http_url, "file", max(levels)),
            )
            pairs.append(pair)
            assert server.pid is not None
            time.sleep(1.0)
            pair.idle_rss = process_tree_rss(server.pid)
            variants += served_variants(pair, engine_inputs, files, levels)
        t = lap("servers_start", t)
        names = [pair.spec.models for pair in pairs]
        urls = [(pair.server.http_url, [m.engine, m.preprocess]) for pair, m in zip(pairs, names, strict=True)]
        before = [inference_statistics(url, which) for url, which in urls]
        run_rounds(variants, opts.rounds, opts.seconds, console)
        after = [inference_statistics(url, which) for url, which in urls]
        triton = {
            pair.precision: {model: stats_delta(b[model], a[model]) for model in b}
            for pair, b, a in zip(pairs, before, after, strict=True)
        }
        server_idle = {pair.precision: pair.idle_rss for pair in pairs}
    finally:
        for pair in pairs:
            pair.pixels_client.close()
            pair.files_client.close()
            pair.server.stop()
    t = lap("rounds", t)

    console.print("[bold]server memory per max batch size[/]")
    memory_rows = [
        bench_memory(models[p][0], models[p][2], out, size, engine_inputs, 2, console)
        for p in PRECISIONS
        for size in opts.memory_batches
    ]
    t = lap("memory", t)

    summary = {v.name: summarise(v) for v in variants}
    host = read_host()
    ratios, goals = ratios_and_goals(summary, int8_instructions=bool(host.accelerates("int8")))
    prep_rows = prep["methods"]
    data: dict[str, Any] = {
        "model": {
            "checkpoint": checkpoint,
            "architecture": spec.architecture,
            "random_weights": random_weights,
            "input_hw": list(spec.input_hw),
            "labels": list(spec.labels.names),
            "resize_mode": spec.resize_mode,
            "pipeline_batch": opts.pipeline_batch,
            "repositories": {p: str(models[p][1]) for p in PRECISIONS},
            "batching": {p: models[p][0].batching.model_dump() for p in PRECISIONS},
            "build_hosts": {p: _dump(models[p][0].build_host) for p in PRECISIONS},
            "onnx_bytes": {p: models[p][2].stat().st_size for p in PRECISIONS},
        },
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": {"model": host.model, "isa": sorted(host.isa), "cores": host.cores},
            "load_average_at_start": load_at_start,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": list(os.getloadavg()),
        },
        "rounds": opts.rounds,
        "seconds": opts.seconds,
        "concurrency": list(levels),
        "images": [img.describe() for img in images],
        "variants": summary,
        "ratios": ratios,
        "goals": goals,
        "preprocessing": prep,
        "triton": triton,
        "server_idle_bytes": server_idle,
        "memory": memory_rows,
        "preprocessing_goal": {
            "box_over_transformers": prep_rows["box"]["speedup"],
            "met": prep_rows["box"]["speedup"] >= GOAL_PREPROCESS_RATIO,
        },
        "timings_s": timings,
    }
    timings["total"] = round(time.perf_counter() - t0, 1)
    markdown = render_markdown(data)
    files_out = {"json": str(out / "bench.json"), "markdown": str(out / "bench.md"), "png": str(out / "bench.png")}
    data["files"] = files_out
    (out / "bench.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / "bench.md").write_text(markdown)
    plot_bench(data, out / "bench.png")
    console.print(f"[bold green]bench done[/] in {timings['total']:.0f} s: {out}")
    return BenchResult(data=data, markdown=markdown, out=out, files=files_out)

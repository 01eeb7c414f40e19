"""The measurement behind the CPU serving defaults (`dfserve.export.policy.CPU_BATCHING`): served `vit` against raw ONNX
Runtime at every concurrency, for candidate batching and thread settings, in alternating rounds.

    python -m dfserve.bench.tune REPOSITORY [--candidate mb=1,delay=0,threads=0 ...] [--concurrency 1,2,4,8,16]
                                            [--seconds 4] [--rounds 3] [--detector] [--out tune.json]

REPOSITORY is a built repository (python or container target); its ONNX graph and its precision are what is
measured, so run it once on an FP32 build and once on an INT8 build. Every candidate gets its own repository
(written from the same graph by the repository writer) and its own server, all started before the first round
and idle (ONNX Runtime does not spin in the server) while another variant runs. A round measures, for each
concurrency, the raw engine at the matching batch sizes and then every candidate, in a rotating order, so that
whatever else runs on a shared machine hits every variant alike; figures are medians over rounds.

served / raw at concurrency c compares a candidate with the best raw batch size up to c (c concurrent
single-image requests can at most form batches of c): the raw engine is what a caller would get by batching
in their own process, and the goal is that serving costs at most 5 % of it.

A candidate is comma-separated key=value: mb (max batch size), delay (max queue delay, µs), engine (`vit`
instances), threads (intra-op threads per instance, 0 = ONNX Runtime's default), pre (`preprocess` instances,
measured with --detector).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfserve.bench.options import GOAL_SERVED_RATIO
from dfserve.bench.run import powers_of_two, served_over_raw
from dfserve.bench.variants import closed_loop, onnx_session, sdk_client, start_server
from dfserve.commandline import positive_ints
from dfserve.engine.cpu import read_host
from dfserve.errors import BenchError
from dfserve.measure.payloads import load_images, to_pixels
from dfserve.measure.processes import process_tree_cpu
from dfserve.repository.writer import write_repository
from dfserve.spec.model import Batching, ModelSpec
from dfserve.spec.names import ONNX_FILENAME

KEYS = {
    "mb": "max_batch_size",
    "delay": "max_queue_delay_us",
    "engine": "engine_instances",
    "threads": "engine_threads",
    "pre": "preprocess_instances",
}


def parse_candidate(text: str, base: Batching) -> Batching:
    """`mb=8,delay=2000` over `base`, without preferred sizes (they make Triton skip the queue delay)."""
    update: dict[str, Any] = {"preferred_batch_sizes": ()}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in KEYS or not value.isdigit():
            raise BenchError(f"candidate {text!r}: expected key=integer with keys {sorted(KEYS)}, got {part!r}")
        update[KEYS[key]] = int(value)
    if "max_batch_size" in update:
        update["preprocess_max_batch_size"] = update["max_batch_size"]
    return Batching.model_validate({**base.model_dump(), **update})


def label(b: Batching) -> str:
    return (
        f"mb={b.max_batch_size},delay={b.max_queue_delay_us},engine={b.engine_instances},"
        f"threads={b.engine_threads},pre={b.preprocess_instances}"
    )


def _raw_rate(session: Any, spec: ModelSpec, pixels: np.ndarray, batch: int, seconds: float) -> float:
    feed = {spec.tensors.pixels: np.resize(pixels, (batch, *pixels.shape[1:]))}
    session.run(None, feed)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        session.run(None, feed)
        done += batch
    return done / (time.perf_counter() - start)


def _served_point(client: Any, items: Sequence[Any], concurrency: int, seconds: float, pid: int) -> dict[str, float]:
    """`concurrency` closed-loop callers for `seconds` (the bench's own loop)."""
    warm = [items[i % len(items)] for i in range(concurrency)]
    client.classify_many(warm, concurrency=concurrency, raise_on_error=True)  # opens the connections
    cpu = process_tree_cpu(pid)
    window = closed_loop(client.classify, items, concurrency, seconds)
    return {
        "images_per_s": window.images / window.seconds,
        "server_cpu_s_per_image": (process_tree_cpu(pid) - cpu) / window.images,
    }


def run(
    repository: Path,
    candidates: Sequence[str],
    *,
    levels: Sequence[int] = (1, 2, 4, 8, 16),
    seconds: float = 4.0,
    rounds: int = 3,
    detector: bool = False,
    image_count: int = 8,
    log: Any = print,
) -> dict[str, Any]:
    """Medians over `rounds` of raw images/s per batch size and served images/s per candidate and concurrency."""

    spec = ModelSpec.load(repository)
    onnx = repository / spec.models.engine / "1" / ONNX_FILENAME
    if not onnx.is_file():
        raise BenchError(f"{onnx} is missing: tuning needs the ONNX graph (a python or container build)")
    variants = [parse_candidate(c, spec.batching) for c in candidates]
    images = load_images(None, count=image_count)
    pixels = np.stack(to_pixels(images, spec, spec.resize_mode))
    engine_inputs = [np.ascontiguousarray(p.transpose(1, 2, 0)) for p in pixels]
    files = [img.data for img in images]
    session = onnx_session(onnx)
    raw_batches = sorted({b for c in levels for b in powers_of_two(c)})
    raw: dict[int, list[float]] = {b: [] for b in raw_batches}
    served: dict[str, dict[int, list[dict[str, float]]]] = {label(v): {c: [] for c in levels} for v in variants}
    det: dict[str, dict[int, list[dict[str, float]]]] = {label(v): {c: [] for c in levels} for v in variants}
    with tempfile.TemporaryDirectory(prefix="dfserve-tune-") as tmp_name:
        servers, clients = [], []
        try:
            for i, variant in enumerate(variants):
                repo = write_repository(
                    spec.model_copy(update={"batching": variant}),
                    Path(tmp_name) / f"c{i}",
                    target="python",
                    onnx_path=onnx,
                )
                server = start_server(repo)
                server.start(timeout=600)
                servers.append(server)
                clients.append(
                    (
                        sdk_client(server.http_url, "pixels", max(levels)),
                        sdk_client(server.http_url, "file", max(levels)),
                    )
                )
                log(f"started {label(variant)}")
            for r in range(rounds):
                for b in raw_batches:
                    raw[b].append(_raw_rate(session, spec, pixels, b, seconds))
                for c in levels:
                    order = list(range(len(variants)))
                    order = order[r % len(order) :] + order[: r % len(order)]  # rotate who goes first
                    for i in order:
                        pixels_client, files_client = clients[i]
                        pid = servers[i].pid
                        assert pid is not None
                        served[label(variants[i])][c].append(
                            _served_point(pixels_client, engine_inputs, c, seconds, pid)
                        )
                        if detector:
                            det[label(variants[i])][c].append(_served_point(files_client, files, c, seconds, pid))
                log(f"round {r + 1}/{rounds}: raw {[round(raw[b][-1], 2) for b in raw_batches]}")
        finally:
            for pixels_client, files_client in clients:
                pixels_client.close()
                files_client.close()
            for server in servers:
                server.stop()
    raw_median = {b: statistics.median(v) for b, v in raw.items()}

    def medians(points: dict[int, list[dict[str, float]]]) -> dict[int, dict[str, float]]:
        return {c: {k: statistics.median(p[k] for p in v) for k in v[0]} for c, v in points.items() if v}

    results: dict[str, Any] = {}
    for name in served:
        vit = medians(served[name])
        ratio = served_over_raw({c: p["images_per_s"] for c, p in vit.items()}, raw_median)
        for c, point in vit.items():
            point["served_over_raw"] = ratio[c]
        worst = min(p["served_over_raw"] for p in vit.values())
        results[name] = {"vit": vit, "worst_served_over_raw": worst, "meets_goal": worst >= GOAL_SERVED_RATIO}
        if detector:
            results[name]["detector"] = medians(det[name])
    host = read_host()
    return {
        "repository": str(repository),
        "host": {"cpu_model": host.model, "isa": sorted(host.isa), "cores": host.cores},
        "build_host": spec.build_host.model_dump() if spec.build_host else None,
        "precision": spec.precision,
        "input_hw": list(spec.input_hw),
        "rounds": rounds,
        "seconds": seconds,
        "raw_images_per_s": raw_median,
        "candidates": results,
    }


def render(result: dict[str, Any]) -> str:
    levels = sorted({c for r in result["candidates"].values() for c in r["vit"]})
    host = result.get("host") or {}
    lines = [
        f"{host.get('cpu_model', '?')}, {host.get('cores', '?')} cores; "
        f"precision {result['precision']}, {result['rounds']} alternating rounds; raw ONNX Runtime images/s by "
        f"batch: " + ", ".join(f"{b}: {v:.2f}" for b, v in result["raw_images_per_s"].items()),
        "",
        "| candidate | "
        + " | ".join(f"c={c} img/s (served/raw)" for c in levels)
        + f" | worst | >= {GOAL_SERVED_RATIO} |",
        "|---|" + "---:|" * (len(levels) + 2),
    ]
    for name, r in result["candidates"].items():
        cells = [f"{r['vit'][c]['images_per_s']:.2f} ({r['vit'][c]['served_over_raw']:.2f})" for c in levels]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {r['worst_served_over_raw']:.2f} | "
            f"{'yes' if r['meets_goal'] else 'no'} |"
        )
    if any("detector" in r for r in result["candidates"].values()):
        lines += ["", "detector (JPEG files), images/s:", ""]
        lines += ["| candidate | " + " | ".join(f"c={c}" for c in levels) + " |", "|---|" + "---:|" * len(levels)]
        for name, r in result["candidates"].items():
            cells = [f"{r['detector'][c]['images_per_s']:.2f}" for c in levels]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser(prog: str = "python -m dfserve.bench.tune") -> argparse.ArgumentParser:
    """The options, shared by `python -m dfserve.bench.tune` and `dfserve bench tune`."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--candidate", action="append", default=None, help="repeatable; see the module docstring")
    parser.add_argument("--concurrency", type=positive_ints, default=(1, 2, 4, 8, 16))
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--detector", action="store_true", help="also the ensemble with JPEG files")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m dfserve.bench.tune") -> int:
    args = build_parser(prog).parse_args(argv)
    candidates = args.candidate or ["", "mb=1", "mb=4,delay=2000", "mb=8,delay=2000"]
    result = run(
        args.repository.resolve(),
        candidates,
        levels=args.concurrency,
        seconds=args.seconds,
        rounds=args.rounds,
        detector=args.detector,
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

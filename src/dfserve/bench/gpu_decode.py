"""`dfserve bench gpu-decode`: does the served `detector` with `--decode gpu` keep the GPU busy?

    dfserve bench gpu-decode --device cuda --out gpu-decode          # ViT-S/16@384, random weights, FP16 (~6 min)
    dfserve bench gpu-decode --device cuda --model ./checkpoint      # a real checkpoint
    dfserve bench gpu-decode --device cpu --budget-s 60 --model TINY # the same script on a CPU (the tests)

One prepared script for a GPU host that has PyTorch with CUDA, torchvision and Transformers but no TensorRT and no
internet. What it needs beyond that travels with it as wheels: dfserve itself and nvidia-pytriton (55 MB, which
carries `tritonserver`; tritonclient comes with it). Sections, each with a share of `--budget-s` (default 420 s,
inside an 8-minute slot), each recording its error rather than stopping the others:

1. engine: the `vit` engine alone (`dfserve.engine.torch_module`, the served precision) on uint8 pixels already on
   the device, at the served max batch: the ceiling the served figures are divided by;
2. decode: `dfserve.engine.gpu_decode.DeviceDecoder` alone (nvJPEG through torchvision, resize, crop) on the
   photographs at each size, at the served max batch;
3. served_cpu / served_gpu: `dfserve build --engine torch --decode cpu|gpu` of the same checkpoint, served by the
   embedded Triton, loaded with JPEG files through HTTP (requests of several files, many in flight, so that the
   client is not what limits); images/s per photograph size, and the ratio served / engine alone (goal ≥ 0.8
   for `--decode gpu`);
4. the decode drift each `--decode gpu` build measured (its build report), with the device that measured it.

The photographs are the ones dfserve ships (about 512 px) and resized variants of them (1, 3 and 12 megapixels,
JPEG quality 90), so decoding costs what phone photographs cost. A random-weights model's head is scaled
(`--head-scale`) so its scores spread over (0, 1) and drift shows. Writes gpu_decode.json and gpu_decode.md.
"""

from __future__ import annotations

import argparse
import functools
import io
import itertools
import json
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfserve.bench.gpu_decode_options import SECTION_SHARES, SIZES, Options, add_arguments, options_from
from dfserve.engine import torch_module
from dfserve.engine.gpu_decode import DeviceDecoder
from dfserve.export.checkpoint import labels_for, preprocessing_for, resolve, save_random_checkpoint
from dfserve.export.pipeline import BuildOptions, build
from dfserve.samples import photos
from dfserve.spec.model import Batching, Limits, ModelSpec
from dfserve.triton.process import TritonServer


@dataclass
class State:
    opts: Options
    checkpoint: Path
    files: dict[str, list[bytes]]
    results: dict[str, Any] = field(default_factory=dict)
    repos: dict[str, Path] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        return self.opts.precision or ("fp16" if self.opts.device.startswith("cuda") else "fp32")


def photograph_files(sizes: tuple[str, ...], per_size: int) -> dict[str, list[bytes]]:
    """JPEG files per size name: the shipped photographs, or those resized (bicubic) and saved at quality 90."""
    shipped = [data for _, data in photos()]
    out: dict[str, list[bytes]] = {}
    for name in sizes:
        size = SIZES[name]
        files = []
        for data in shipped[:per_size]:
            if size is None:
                files.append(data)
                continue
            img = Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            files.append(buf.getvalue())
        out[name] = files
    return out


def make_checkpoint(folder: Path, head_scale: float) -> Path:
    """The preset ViT-S/16@384 with seeded random weights and a scaled head, as a local checkpoint folder."""
    from safetensors.torch import load_file, save_file

    save_random_checkpoint(folder)
    weights = load_file(folder / "model.safetensors")
    for name in ("classifier.weight", "classifier.bias"):
        weights[name] = weights[name] * head_scale
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(run: Callable[[], Any], images: int, device: str, seconds: float) -> dict[str, Any]:
    """Median images/s of `run` (which handles `images` images) after two warm-up calls, within `seconds`."""
    for _ in range(2):
        run()
    _sync(device)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 500):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"images": images, "images_per_s": round(images / median, 1), "ms": round(median * 1e3, 2)}


def _batch_of(files: list[bytes], n: int) -> list[bytes]:
    return [files[i % len(files)] for i in range(n)]


def section_engine(s: State, budget: float) -> dict[str, Any]:
    import torch

    ckpt = resolve(str(s.checkpoint))
    spec = ModelSpec.load(s.repos["gpu"]) if "gpu" in s.repos else None
    classifier = torch_module.load_classifier(s.checkpoint)

    pp = spec.preprocessing if spec else preprocessing_for(ckpt)
    labels = spec.labels if spec else labels_for(ckpt)
    engine = torch_module.ScoringModule(classifier, pp, labels, half=s.precision == "fp16").to(s.opts.device).eval()
    h, w = pp.output_hw
    x = torch.randint(0, 256, (s.opts.max_batch, 3, h, w), dtype=torch.uint8, device=s.opts.device)
    with torch.inference_mode():
        figures = timed(lambda: engine(x), s.opts.max_batch, s.opts.device, budget * 0.8)
    return {"batch": s.opts.max_batch, "precision": s.precision, **figures}


def section_decode(s: State, budget: float) -> dict[str, Any]:

    decoder = DeviceDecoder(preprocessing_for(resolve(str(s.checkpoint))), Limits(), s.opts.device)
    out: dict[str, Any] = {"jpeg_decoder": decoder.jpeg_decoder, "batch": s.opts.max_batch, "sizes": {}}
    for name, files in s.files.items():
        batch = _batch_of(files, s.opts.max_batch)
        seconds = budget / len(s.files) * 0.8
        out["sizes"][name] = timed(functools.partial(decoder, batch), len(batch), s.opts.device, seconds)
    return out


def build_repository(s: State, decode: str) -> Path:
    from rich.console import Console

    cores = os.cpu_count() or 1
    batching = Batching(
        max_batch_size=s.opts.max_batch,
        preprocess_max_batch_size=s.opts.max_batch,
        max_queue_delay_us=2000,
        engine_instances=1,
        preprocess_instances=s.opts.preprocess_instances or max(1, cores // 4),
        preprocess_threads=s.opts.preprocess_threads,
    )
    out = s.opts.out / f"repo-{decode}"
    build(
        BuildOptions(
            out=out,
            model=str(s.checkpoint),
            engine="torch",
            precision=s.precision,  # type: ignore[arg-type]
            decode=decode,  # type: ignore[arg-type]
            batching=batching,
            parity_photos=4,
        ),
        Console(stderr=True, quiet=True),
    )
    return out


def load_served(url: str, files: list[bytes], per_request: int, concurrency: int, seconds: float) -> dict[str, Any]:
    """Closed loop: `concurrency` threads each sending requests of `per_request` files for `seconds`."""
    import tritonclient.http as httpclient

    picks = itertools.count()
    lock = threading.Lock()
    counts = {"images": 0, "errors": 0}
    stop = time.perf_counter() + seconds

    def worker() -> None:
        client = httpclient.InferenceServerClient(url, network_timeout=300, connection_timeout=60)
        try:
            while time.perf_counter() < stop:
                k = next(picks)
                batch = [files[(k * per_request + j) % len(files)] for j in range(per_request)]
                inp = httpclient.InferInput("image", [per_request, 1], "BYTES")
                inp.set_data_from_numpy(np.array([[d] for d in batch], dtype=object))
                try:
                    client.infer("detector", [inp])
                    ok = True
                except Exception:
                    ok = False
                with lock:
                    counts["images" if ok else "errors"] += per_request if ok else 1
        finally:
            client.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 300)
    took = time.perf_counter() - started
    figures = {"images_per_s": round(counts["images"] / took, 1), **counts}
    return {**figures, "seconds": round(took, 1), "files_per_request": per_request, "concurrency": concurrency}


def section_served(s: State, budget: float, decode: str) -> dict[str, Any]:

    started = time.perf_counter()
    repo = s.repos.get(decode) or build_repository(s, decode)
    s.repos[decode] = repo
    out: dict[str, Any] = {"build_s": round(time.perf_counter() - started, 1), "sizes": {}}
    report = json.loads((repo / "build_report.json").read_text())
    if decode == "gpu":
        out["drift"] = report.get("decode_gpu")
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
        out["start_s"] = round(time.perf_counter() - started - out["build_s"], 1)
        # what is left of the budget after the build and the start (fixed costs), at least 2 s per size
        per_size = max(2.0, (budget - (time.perf_counter() - started)) / len(s.files) * 0.8)
        load_served(server.http_url, s.files[next(iter(s.files))], s.opts.files_per_request, 2, 1.0)  # warm-up
        for name, files in s.files.items():
            out["sizes"][name] = load_served(
                server.http_url, files, s.opts.files_per_request, s.opts.concurrency, per_size
            )
    return out


SECTIONS: dict[str, Callable[[State, float], dict[str, Any]]] = {
    "engine": section_engine,
    "decode": section_decode,
    "served_cpu": lambda s, b: section_served(s, b, "cpu"),
    "served_gpu": lambda s, b: section_served(s, b, "gpu"),
}


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """served / engine alone per photograph size (goal ≥ 0.8 for served_gpu)."""
    engine = (results.get("engine") or {}).get("images_per_s")
    out: dict[str, Any] = {}
    for section in ("served_cpu", "served_gpu"):
        sizes = (results.get(section) or {}).get("sizes") or {}
        if engine:
            out[section] = {n: round(v["images_per_s"] / engine, 3) for n, v in sizes.items()}
    return out


def markdown(result: dict[str, Any]) -> str:
    r = result["sections"]
    host = result["host"]
    lines = [
        f"# GPU decode: {host.get('gpu', host['device'])}, {host['cpu_cores']} cores, torch {host['torch']}",
        "",
        f"Model: {result['model']}, precision {result['precision']}, batch {result['batch']}.",
        "",
    ]
    engine = (r.get("engine") or {}).get("images_per_s")
    lines += [f"Engine alone: {engine} images/s" if engine else f"Engine alone: {r.get('engine', 'not run')}", ""]
    decode = r.get("decode") or {}
    lines += ["| photographs | decode alone | served --decode cpu | served --decode gpu | gpu / engine (goal ≥ 0.8) |"]
    lines += ["|---|---:|---:|---:|---:|"]
    rat = result.get("ratios", {}).get("served_gpu", {})

    def fig(section: Any, name: str) -> str:
        value = ((section or {}).get("sizes") or {}).get(name)
        return f"{value['images_per_s']}" if value else "–"

    for name in result["sizes"]:
        lines.append(
            f"| {name} | {fig(decode, name)} | {fig(r.get('served_cpu'), name)} | {fig(r.get('served_gpu'), name)} "
            f"| {rat.get(name, '–')} |"
        )
    drift = (r.get("served_gpu") or {}).get("drift")
    if drift:
        lines += [
            "",
            f"Decode drift (build report, measured on {drift['device']} with {drift['jpeg_decoder']}): max |Δscore| "
            f"{drift['max_abs_diff']:.2e}, {drift['flips']} flips, agreement {drift['agreement']:.1%} "
            f"(bar {drift['bar']['max_abs_diff']:g}, no flips).",
        ]
    errors = {n: b["error"] for n, b in r.items() if "error" in b}
    lines += ["", *(f"- {n} failed: {e}" for n, e in errors.items())] if errors else []
    return "\n".join(lines) + "\n"


def run(opts: Options) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU here")
    opts.out.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(opts.model) if opts.model else make_checkpoint(opts.out / "checkpoint", opts.head_scale)
    state = State(opts=opts, checkpoint=checkpoint, files=photograph_files(opts.sizes, opts.photos_per_size))
    host: dict[str, Any] = {"device": opts.device, "cpu_cores": os.cpu_count(), "torch": torch.__version__}
    if opts.device.startswith("cuda"):
        host["gpu"] = torch.cuda.get_device_name(torch.device(opts.device))
    result: dict[str, Any] = {
        "host": host,
        "model": str(opts.model or "preset ViT-S/16@384, random weights, scaled head"),
        "precision": state.precision,
        "batch": opts.max_batch,
        "sizes": list(state.files),
        "sections": {},
    }
    deadline = started + opts.budget_s
    order = [n for n in ("served_gpu", "served_cpu", "engine", "decode") if n in opts.sections]  # builds first
    for k, name in enumerate(order):
        # each section gets its share of the time left, so a slow build or server start is absorbed by the rest
        left = max(5.0, deadline - time.perf_counter())
        budget = left * SECTION_SHARES[name] / sum(SECTION_SHARES[n] for n in order[k:])
        t0 = time.perf_counter()
        print(f"[{t0 - started:6.1f} s] {name} (budget {budget:.0f} s)", flush=True)
        try:
            body = SECTIONS[name](state, budget)
        except Exception as exc:
            body = {"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()[-2000:]}
        body["elapsed_s"] = round(time.perf_counter() - t0, 1)
        result["sections"][name] = body
        result["ratios"] = ratios(result["sections"])
        (opts.out / "gpu_decode.json").write_text(json.dumps(result, indent=2) + "\n")  # survives a kill
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    (opts.out / "gpu_decode.json").write_text(json.dumps(result, indent=2) + "\n")
    (opts.out / "gpu_decode.md").write_text(markdown(result))
    return result


def command(args: argparse.Namespace) -> int:
    result = run(options_from(args))
    print(markdown(result))
    return 1 if any("error" in b for b in result["sections"].values()) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfserve.bench.gpu_decode", description=__doc__)
    add_arguments(p)
    return command(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

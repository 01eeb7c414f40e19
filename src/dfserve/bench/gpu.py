"""The GPU measurement: what one accelerator does with dfserve's engine, and whether CPU decoding can feed it.

    python -m dfserve.bench.gpu --device cuda --out gpu-bench            # full-size ViT-S/16@384, random weights
    python -m dfserve.bench.gpu --device cuda --model ./checkpoint       # a real checkpoint
    python -m dfserve.bench.gpu --device cpu --out /tmp/b --budget-s 60  # the same script on a CPU (tests)

Sections, each independent (one that fails records its error and the others still run) and each with a share
of `--budget-s`, so the whole run ends on time on any host:

1. ceiling: PyTorch images/s of the `vit` engine (`dfserve.engine.torch_module.ScoringModule`: uint8 in, scores
   out) at batch 1 … 256, eager and compiled (torch.compile, CUDA graphs where the device has them), FP16 on CUDA
   and FP32 on a CPU (`half` is never used on a CPU, where it would measure slow CPU half kernels); compiled figures
   flat across batch sizes far below eager (recompiles or graph breaks) are flagged and left out of the table
   (`dfserve.bench.figures`). These are PyTorch figures, not TensorRT's: `python -m dfserve.bench.trtexec`
   measures the TensorRT engine;
2. drift: the GPU engine (FP32, and FP16 on CUDA) against the CPU FP32 reference on the parity set, through
   `dfserve.export.fidelity.compare` (the head is scaled so random-weight scores spread over (0, 1));
3. preprocessing: dfserve's CPU decoding and resizing (exact, box, draft) on ~1024 px JPEGs, on one core and on
   every core of the host: the images/s that server-side decoding can feed the engine;
4. gpu_decode: nvJPEG decoding (`torchvision.io.decode_jpeg` on the device) plus antialiased bicubic resizing
   and the centre crop: images/s, and the pixel and score drift against `exact`;
5. served: the torch engine served through the embedded Triton against the engine alone
   (`dfserve.bench.torch_served`), where this host has tritonserver and the section's budget allows building and
   serving (>= 120 s); otherwise the section says why it was skipped.

Every figure carries a label saying what ran (PyTorch eager or compiled; precision; device; random weights).

It needs torch, transformers, numpy, Pillow and pydantic; torchvision for section 4; nothing of the build or
server extras. A GPU is needed for the figures that matter; the project's own machines have none, so the test
suite runs it with `--device cpu` on a tiny checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfserve.bench import torch_served
from dfserve.bench.figures import check_half, flag_compiled, flag_flat, label
from dfserve.bench.gpu_report import host_info, markdown
from dfserve.engine.torch_module import ScoringModule, sensitive_head, use_sdpa
from dfserve.errors import InvalidImageError
from dfserve.export.checkpoint import labels_for, preprocessing_for, resolve
from dfserve.export.fidelity import compare
from dfserve.export.parity import write_parity_images
from dfserve.export.policy import DEFAULT_PROCESSOR_CONFIG, DEFAULT_VIT_CONFIG, FIDELITY_BARS
from dfserve.preprocessing import preprocess_bytes, resized_size
from dfserve.samples import photos
from dfserve.spec.model import Labels, Preprocessing, ResizeMode
from dfserve.triton.distribution import find_tritonserver

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COMPILED_BATCHES = (1, 8, 32, 128)
MODES: tuple[ResizeMode, ...] = ("exact", "box", "draft")
SECTION_SHARES = {"ceiling": 0.40, "drift": 0.10, "preprocessing": 0.20, "gpu_decode": 0.15, "served": 0.15}
"""Each section's share of --budget-s; a section that finishes early leaves its time to the next ones."""


@dataclass
class Setup:
    """What every section shares: the model, its policy, and the host."""

    device: str
    classifier: Any
    preprocessing: Preprocessing
    labels: Labels
    source: str
    random_weights: bool
    head_scale: float
    compile_mode: str | None = None
    model_path: str | None = None
    out: Path = Path("gpu-bench")
    jpegs: list[bytes] = field(default_factory=list)
    parity: list[tuple[str, bytes]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------- setup


def load_setup(args: argparse.Namespace) -> Setup:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(args.seed)
    if args.model:
        ckpt = resolve(args.model, random_weights=False)
        config = use_sdpa(ViTConfig.from_dict({k: v for k, v in ckpt.config.items() if k != "transformers_version"}))
        classifier = ViTForImageClassification.from_pretrained(ckpt.folder, config=config, use_safetensors=True)
        labels, pp, random_weights = labels_for(ckpt), preprocessing_for(ckpt), False
    else:
        config = use_sdpa(ViTConfig.from_dict(dict(DEFAULT_VIT_CONFIG)))
        classifier = ViTForImageClassification(config)
        labels = Labels(names=("real", "fake"), activation="sigmoid", num_logits=1)
        pp = Preprocessing.from_processor_config(DEFAULT_PROCESSOR_CONFIG)
        random_weights = True
    if args.head_scale != 1.0:
        sensitive_head(classifier, args.head_scale)
    classifier.eval()
    return Setup(
        device=args.device,
        classifier=classifier,
        preprocessing=pp,
        labels=labels,
        source=args.model or "preset ViT-S/16@384 (random weights)",
        random_weights=random_weights,
        head_scale=args.head_scale,
        compile_mode=args.compile_mode,
        model_path=args.model,
        out=Path(args.out),
        jpegs=sample_jpegs(args.images, args.jpeg_side),
        parity=parity_files(),
    )


def _photo_arrays() -> list[np.ndarray]:
    """The photographs that ship with dfserve, decoded."""

    return [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for _, data in photos()]


def sample_jpegs(count: int, side: int) -> list[bytes]:
    """`count` JPEGs of one size (side × 3/4 side, quality 90), so GPU decoding can batch them."""
    out = []
    photos = _photo_arrays()
    for k in range(count):
        img = Image.fromarray(photos[k % len(photos)]).resize((side, side * 3 // 4), Image.Resampling.BICUBIC)
        if k >= len(photos):
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT if k % 2 else Image.Transpose.FLIP_TOP_BOTTOM)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def parity_files() -> list[tuple[str, bytes]]:
    """The build's parity set where the build module can make it (real photographs and hostile generated files),
    else the sample photographs alone."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return [(p.name, p.read_bytes()) for p in write_parity_images(Path(tmp))]
    except Exception:
        return [(f"photo_{k}.jpg", data) for k, data in enumerate(sample_jpegs(6, 640))]


# -------------------------------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def images_per_second(
    run: Callable[[], Any], batch: int, device: str, seconds: float, min_iters: int = 3
) -> dict[str, Any]:
    """Median-of-iterations throughput of `run` (one batch), after warm-up, within `seconds`."""
    for _ in range(2):
        run()
    _sync(device)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_iters or (time.perf_counter() < deadline and len(times) < 200):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "batch": batch,
        "images_per_s": round(batch / median, 2),
        "ms_per_batch": round(median * 1e3, 3),
        "iters": len(times),
    }


# ------------------------------------------------------------------------------------------------- sections


def _run_clone(fn: Callable[[Any], Any], x: Any) -> Any:
    """A CUDA-graph output is overwritten by the next replay: clone it, as a caller keeping results must."""
    return fn(x).clone()


def section_ceiling(s: Setup, budget: float) -> dict[str, Any]:
    import torch

    h, w = s.preprocessing.output_hw
    half = s.device.startswith("cuda")  # FP16 on CUDA only, never silently on a CPU
    check_half(s.device, half)
    precision = "fp16" if half else "fp32"
    engine = ScoringModule(s.classifier, s.preprocessing, s.labels, half=half).to(s.device).eval()
    out: dict[str, Any] = {"precision": precision, "eager": [], "compiled": [], "notes": [], "flags": []}
    out["labels"] = {"eager": label("PyTorch eager", precision, s.device, s.random_weights)}
    deadline = time.perf_counter() + budget
    per_point = max(0.3, budget * 0.35 / len(BATCHES))
    with torch.inference_mode():
        for batch in BATCHES:
            if time.perf_counter() > deadline - per_point:
                out["notes"].append(f"eager stopped before batch {batch}: budget")
                break
            x = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, device=s.device)
            try:
                out["eager"].append(images_per_second(functools.partial(engine, x), batch, s.device, per_point))
            except torch.OutOfMemoryError:
                out["notes"].append(f"eager batch {batch}: out of memory")
                break
        mode = s.compile_mode or ("reduce-overhead" if s.device.startswith("cuda") else "default")
        out["compile_mode"] = mode
        out["labels"]["compiled"] = label(f"PyTorch compiled ({mode})", precision, s.device, s.random_weights)
        out["flags"] = flag_flat([p["images_per_s"] for p in out["eager"]], [p["batch"] for p in out["eager"]], "eager")
        try:
            compiled = torch.compile(engine, mode=mode, dynamic=False)
        except Exception as exc:  # a torch without a working compiler on this host
            out["notes"].append(f"torch.compile unavailable: {exc!r}")
            return out
        for batch in COMPILED_BATCHES:
            remaining = deadline - time.perf_counter()
            if remaining < 5:
                out["notes"].append(f"compiled stopped before batch {batch}: budget")
                break
            x = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, device=s.device)
            started = time.perf_counter()
            try:
                compiled(x)  # compilation for this shape
                _sync(s.device)
                point = images_per_second(
                    functools.partial(_run_clone, compiled, x), batch, s.device, min(per_point, remaining / 2)
                )
            except Exception as exc:
                out["notes"].append(f"compiled batch {batch} failed: {type(exc).__name__}: {exc}"[:300])
                break
            point["compile_s"] = round(time.perf_counter() - started, 1)
            out["compiled"].append(point)
    eager = {p["batch"]: p["images_per_s"] for p in out["eager"]}
    compiled_flags = flag_compiled({p["batch"]: p["images_per_s"] for p in out["compiled"]}, eager)
    out["flags"] += compiled_flags
    out["compiled_reported"] = bool(out["compiled"]) and not compiled_flags
    return out


def _pixels(s: Setup, files: list[tuple[str, bytes]], mode: ResizeMode = "exact") -> tuple[list[str], np.ndarray]:

    names, arrays = [], []
    for name, data in files:
        try:
            arrays.append(preprocess_bytes(data, s.preprocessing, mode=mode))
            names.append(name)
        except InvalidImageError:
            continue
    return names, np.stack(arrays)


def _scores(s: Setup, pixels: np.ndarray, device: str, half: bool, compiled: bool = False) -> np.ndarray:
    import torch

    engine = ScoringModule(s.classifier, s.preprocessing, s.labels, half=half).to(device).eval()
    run = torch.compile(engine, dynamic=False) if compiled else engine
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixels), 16):
            out.append(run(torch.from_numpy(pixels[start : start + 16]).to(device)).float().cpu().numpy())
    return np.concatenate(out)


def section_drift(s: Setup, budget: float) -> dict[str, Any]:

    names, pixels = _pixels(s, s.parity)
    reference = _scores(s, pixels, "cpu", half=False)
    spread = reference[:, -1]
    out: dict[str, Any] = {
        "images": len(names),
        "reference": "CPU FP32",
        "reference_score_range": [round(float(spread.min()), 4), round(float(spread.max()), 4)],
        "candidates": {},
    }
    precisions = (("fp32", False), ("fp16", True)) if s.device.startswith("cuda") else (("fp32", False),)
    for precision, half in precisions:
        drift = compare(reference, _scores(s, pixels, s.device, half=half), s.labels, names)
        out["candidates"][f"{s.device} {precision}"] = {
            **drift.as_report(),
            "passes_bar": drift.passes(FIDELITY_BARS[precision]),
        }
    return out


def _preprocess_all(args: tuple[list[bytes], Preprocessing, str, float]) -> int:

    jpegs, pp, mode, seconds = args
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        preprocess_bytes(jpegs[done % len(jpegs)], pp, mode=mode)  # type: ignore[arg-type]
        done += 1
    return done


def section_preprocessing(s: Setup, budget: float) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    seconds = max(0.5, budget / (2 * len(MODES)) - 0.5)
    out: dict[str, Any] = {"cores": cores, "jpeg": _jpeg_shape(s), "modes": {}}
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    for mode in MODES:
        one = _preprocess_all((s.jpegs, s.preprocessing, mode, seconds)) / seconds
        with ctx.Pool(cores) as pool:
            started = time.perf_counter()
            counts = pool.map(_preprocess_all, [(s.jpegs, s.preprocessing, mode, seconds)] * cores)
            elapsed = time.perf_counter() - started
        out["modes"][mode] = {
            "one_core_images_per_s": round(one, 1),
            "all_cores_images_per_s": round(sum(counts) / elapsed, 1),
        }
    return out


def _jpeg_shape(s: Setup) -> str:
    with Image.open(io.BytesIO(s.jpegs[0])) as img:
        return f"{img.width}x{img.height} JPEG q90"


def gpu_resize_and_crop(images: Any, pp: Preprocessing) -> Any:
    """Batched uint8 [N,3,h,w] (one size) → uint8 [N,3,H,W] with the checkpoint's resize (bicubic or bilinear,
    antialiased like Pillow) and Transformers' centre crop."""
    import torch
    import torch.nn.functional as F

    _, _, h, w = images.shape
    rh, rw = resized_size(pp, w, h)
    filt = {2: "bilinear", 3: "bicubic"}.get(pp.resample, "bicubic")
    x = F.interpolate(images.float(), size=(rh, rw), mode=filt, antialias=True, align_corners=False)
    x = x.round_().clamp_(0, 255).to(torch.uint8)
    ch, cw = pp.crop or (rh, rw)
    top, left = (rh - ch) // 2, (rw - cw) // 2
    return x[:, :, top : top + ch, left : left + cw].contiguous()


def section_gpu_decode(s: Setup, budget: float) -> dict[str, Any]:
    import torch

    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as exc:
        return {"skipped": f"torchvision is not importable here ({type(exc).__name__}: {exc})"[:300]}
    if s.preprocessing.crop is not None and (s.preprocessing.crop[0] > min(s.preprocessing.output_hw)):
        return {"skipped": "crop larger than the resized image: padding is not implemented on the GPU path"}
    device = s.device
    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in s.jpegs]
    batch = len(encoded)

    def decode() -> Any:
        return torch.stack(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))

    def decode_resize() -> Any:
        return gpu_resize_and_crop(decode(), s.preprocessing)

    seconds = max(0.5, budget / 3)
    out: dict[str, Any] = {"jpeg": _jpeg_shape(s), "batch": batch, "device": device}
    out["decode"] = images_per_second(decode, batch, device, seconds)
    out["decode_resize_crop"] = images_per_second(decode_resize, batch, device, seconds)
    gpu_pixels = decode_resize().cpu().numpy()
    _, exact = _pixels(s, [(str(k), d) for k, d in enumerate(s.jpegs)], "exact")
    diff = np.abs(gpu_pixels.astype(np.int16) - exact.astype(np.int16))
    out["pixels_vs_exact"] = {
        "max_abs": int(diff.max()),
        "mean_abs": round(float(diff.mean()), 4),
        "share_differing": round(float((diff > 0).mean()), 4),
    }

    reference = _scores(s, exact, device, half=False)
    out["scores_vs_exact"] = compare(reference, _scores(s, gpu_pixels, device, half=False), s.labels).as_report()
    return out


SERVED_MIN_BUDGET_S = 120.0
"""Building a torch repository, starting Triton and measuring a few concurrencies needs at least this."""


def section_served(s: Setup, budget: float) -> dict[str, Any]:
    """The torch engine served through the embedded Triton against the engine alone (`dfserve.bench.torch_served`)."""
    try:
        importlib.import_module("dfserve.repository.backends.torch_engine")
    except Exception as exc:
        return {"skipped": f"no torch engine backend for the embedded server in this dfserve ({type(exc).__name__})"}
    try:
        find_tritonserver(None)
    except Exception as exc:
        return {"skipped": f"no tritonserver on this host: {exc}"[:300]}
    if budget < SERVED_MIN_BUDGET_S:
        return {
            "skipped": f"budget {budget:.0f} s < {SERVED_MIN_BUDGET_S:.0f} s for building and serving: run "
            "`python -m dfserve.bench.torch_served` on its own"
        }
    levels = [1, 4, 16, 64]
    args = torch_served.build_parser().parse_args(["--out", str(s.out / "served"), "--device", s.device])
    args.model, args.concurrency = s.model_path, levels
    args.seconds, args.budget_s = max(3.0, min(15.0, (budget - 90) / (len(levels) + 1))), budget
    return torch_served.run(args)


SECTIONS: dict[str, Callable[[Setup, float], dict[str, Any]]] = {
    "ceiling": section_ceiling,
    "drift": section_drift,
    "preprocessing": section_preprocessing,
    "gpu_decode": section_gpu_decode,
    "served": section_served,
}


# ------------------------------------------------------------------------------------------------- report


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU here")
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 figures are FP32, not TF32
    setup = load_setup(args)
    result: dict[str, Any] = {
        "host": host_info(args.device),
        "model": {
            "source": setup.source,
            "random_weights": setup.random_weights,
            "head_scale": setup.head_scale,
            "input": "x".join(map(str, setup.preprocessing.output_hw)),
            "labels": list(setup.labels.names),
        },
        "budget_s": args.budget_s,
        "sections": {},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [name for name in SECTIONS if name in args.sections]
    reserve = 0.0
    for name in chosen:
        budget = args.budget_s * SECTION_SHARES[name] + reserve
        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - started:6.1f} s] {name} (budget {budget:.0f} s) ...", flush=True)
        try:
            body = SECTIONS[name](setup, budget)
        except Exception as exc:
            body = {"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()[-2000:]}
        body["elapsed_s"] = round(time.perf_counter() - t0, 1)
        reserve = max(0.0, budget - body["elapsed_s"])
        result["sections"][name] = body
        (out / "gpu_bench.json").write_text(json.dumps(result, indent=2) + "\n")  # partial results survive a kill
        print(f"[{time.perf_counter() - started:6.1f} s] {name} done in {body['elapsed_s']} s", flush=True)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    (out / "gpu_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gpu_bench.md").write_text(markdown(result))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dfserve.bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default %(default)s)")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the preset with random weights)")
    p.add_argument("--out", default="gpu-bench", help="output folder for gpu_bench.json and gpu_bench.md")
    p.add_argument("--budget-s", type=float, default=420.0, help="total time budget in seconds (default %(default)s)")
    p.add_argument("--images", type=int, default=64, help="JPEGs for sections 3 and 4 (default %(default)s)")
    p.add_argument("--jpeg-side", type=int, default=1024, help="width of those JPEGs (default %(default)s)")
    p.add_argument(
        "--head-scale", type=float, default=30.0, help="scale of a random head's weights (default %(default)s)"
    )
    p.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode for the compiled ceiling (default: reduce-overhead on CUDA, i.e. CUDA graphs)",
    )
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset (default: all)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        print(f"error: unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    result = run(args)
    print(markdown(result))
    failed = [n for n, b in result["sections"].items() if "error" in b]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

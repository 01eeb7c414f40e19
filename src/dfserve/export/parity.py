"""The proof every build gives: the served graph agrees with the reference Transformers pipeline.

Reference: `transformers.pipeline("image-classification")` on the original checkpoint with the image processor
that the installed Transformers picks for the checkpoint by default (`AutoImageProcessor.from_pretrained` with no
backend asked for: with Transformers 5 and no torchvision that is the Pillow backend, e.g. `CLIPImageProcessorPil`;
the report names the class and backend it used), fed image files. For timm checkpoints the reference is timm's
own eval transform and forward (`timm_checkpoint.reference_scores`). Candidate: ONNX Runtime on the built graph, fed by
dfserve's preprocessing of the same files. The image set mixes real photographs (shipped in the package) with
generated images chosen to break naive preprocessing: odd sizes and aspect ratios, grey, palette, RGBA, CMYK,
16-bit, 1-bit, GIF, WebP, BMP, TIFF and EXIF-rotated files.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfserve.errors import ParityError
from dfserve.export import timm_checkpoint
from dfserve.export.checkpoint import PROCESSOR_FILE, Checkpoint
from dfserve.export.fidelity import compare, decisions
from dfserve.export.policy import FidelityBar
from dfserve.preprocessing import preprocess_bytes
from dfserve.samples import photos as sample_photos
from dfserve.spec.model import DEFAULT_RESIZE_MODE, RESIZE_MODES, Limits, ModelSpec, ResizeMode
from dfserve.spec.names import SAMPLE_PHOTOS

log = logging.getLogger(__name__)

TOLERANCE = 1e-4


def write_parity_images(folder: Path, *, photos: int = len(SAMPLE_PHOTOS), seed: int = 0) -> list[Path]:
    """Write the parity image set into `folder`; returns the files in a stable order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths: list[Path] = []

    def save(name: str, img: Image.Image, **kw: Any) -> None:
        path = folder / name
        img.save(path, **kw)
        paths.append(path)

    for name, data in sample_photos(photos):
        path = folder / f"photo_{name}.jpg"
        path.write_bytes(data)
        paths.append(path)

    def noise(w: int, h: int) -> Image.Image:
        # smooth colour fields plus noise: closer to photographs than pure noise, still exercises every channel
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 256)], axis=-1)
        arr = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "RGB")

    save("odd_17x403.png", noise(17, 403))
    save("odd_1001x37.jpg", noise(1001, 37), quality=85)
    save("tiny_5x7.png", noise(5, 7))
    save("grey_301x199.png", noise(301, 199).convert("L"))
    save("grey_alpha_120x80.png", noise(120, 80).convert("LA"))
    save("palette_257x131.png", noise(257, 131).convert("P", palette=Image.Palette.ADAPTIVE))
    rgba = noise(211, 173).convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (173, 211), dtype=np.uint8)))
    save("rgba_211x173.png", rgba)
    save("cmyk_240x180.jpg", noise(240, 180).convert("CMYK"), quality=90)
    grey16 = (np.asarray(noise(150, 110).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save("grey16_150x110.png", Image.fromarray(grey16))
    save("bilevel_90x64.png", noise(90, 64).convert("1"))
    save("first_frame_100x70.gif", noise(100, 70).convert("P", palette=Image.Palette.ADAPTIVE))
    save("webp_333x222.webp", noise(333, 222), quality=90)
    save("bmp_129x97.bmp", noise(129, 97))
    save("tiff_145x203.tiff", noise(145, 203), compression="tiff_lzw")
    rotated = noise(320, 200)
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored landscape, displayed portrait: EXIF orientation must be applied
    save("exif_rotated_320x200.jpg", rotated, quality=90, exif=exif.tobytes())
    return paths


@dataclass
class ParityResult:
    max_abs_diff: float
    top1_agreement: float
    images: int
    tolerance: float = TOLERANCE
    resize_mode: str = DEFAULT_RESIZE_MODE
    flips: int = 0
    per_image: list[dict[str, Any]] = field(default_factory=list)
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    """What the reference was: library, processor class and backend (`reference_info`)."""
    reference: Any = field(default=None, repr=False)
    """The reference pipeline's scores [N,K] (not in the report): reduced-precision gates compare with them."""
    """Every resize mode measured on this checkpoint against the reference (`fidelity.ScoreDrift` figures and
    whether it would pass the FP32 bar), so a user sees what `box` or `draft` costs before choosing them."""

    def as_report(self) -> dict[str, Any]:
        report = asdict(self)
        report.pop("reference")
        return report


def reference_processor(ckpt: Checkpoint) -> Any:
    """The image processor the installed Transformers picks for the checkpoint when none is asked for: what a
    user's `pipeline("image-classification", model=...)` runs."""
    from transformers import AutoImageProcessor

    with tempfile.TemporaryDirectory(prefix="dfserve-proc-") as tmp:
        proc_dir = ckpt.folder if ckpt.folder is not None else Path(tmp)
        if ckpt.folder is None:
            (Path(tmp) / PROCESSOR_FILE).write_text(json.dumps(ckpt.processor_config))
        return AutoImageProcessor.from_pretrained(proc_dir)


def processor_backend(processor: Any) -> str:
    """ "pil" or "torchvision": Transformers 5 names it (`backend`); in 4.x the fast processors are torchvision's."""
    backend = getattr(processor, "backend", None)
    if isinstance(backend, str):
        return backend
    return "torchvision" if type(processor).__name__.endswith("Fast") else "pil"


def reference_info(ckpt: Checkpoint, model: Any) -> dict[str, Any]:
    """The reference pipeline, named for the report and the modes table."""
    if ckpt.is_timm:
        return timm_checkpoint.reference_info(ckpt.config, ckpt.format, model)
    import transformers

    processor = reference_processor(ckpt)
    return {
        "library": "transformers",
        "transformers": transformers.__version__,
        "processor": type(processor).__name__,
        "backend": processor_backend(processor),
    }


def reference_scores(
    ckpt: Checkpoint, model: Any, spec: ModelSpec, paths: list[Path], advance: Callable[[int], None] | None = None
) -> np.ndarray:
    """Scores [N,K] from the reference pipeline, in the order of `spec.labels.names`; `advance(n)` as images finish
    (the slow part of a build's parity stage: over a minute on the full model)."""
    if ckpt.is_timm:
        sigmoid = spec.labels.activation == "sigmoid"
        scores = timm_checkpoint.reference_scores(ckpt.config, ckpt.format, model, paths, sigmoid)
        if advance is not None:
            advance(len(paths))
        return scores
    from transformers import pipeline

    processor = reference_processor(ckpt)
    pipe = pipeline("image-classification", model=model, image_processor=processor, device="cpu")
    k = spec.labels.num_logits
    id2label = model.config.id2label
    rows = []
    for path in paths:
        out = pipe(str(path), top_k=k)
        by_label = {r["label"]: float(r["score"]) for r in out}
        logits_order = [by_label[id2label[i]] for i in range(k)]
        if spec.labels.activation == "sigmoid":
            p = logits_order[0]
            rows.append([1.0 - p, p])
        else:
            rows.append(logits_order)
        if advance is not None:
            advance(1)
    return np.asarray(rows, dtype=np.float64)


def parity_pixels(spec: ModelSpec, paths: list[Path], mode: ResizeMode = DEFAULT_RESIZE_MODE) -> np.ndarray:
    """uint8 [N,3,H,W] from dfserve's preprocessing. Parity checks the arithmetic, not the serving limits, which
    a build may set below a parity photograph's size."""
    unlimited = Limits(max_file_bytes=2**62, max_pixels=2**62)
    return np.stack([preprocess_bytes(p.read_bytes(), spec.preprocessing, unlimited, mode) for p in paths])


def onnx_scores(onnx_path: Path, spec: ModelSpec, pixels: np.ndarray) -> np.ndarray:
    """Scores [N,K] from ONNX Runtime (CPU) on the built graph."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = session.run([spec.tensors.scores], {spec.tensors.pixels: pixels})[0]
    return np.asarray(out, dtype=np.float64)


def candidate_scores(
    onnx_path: Path, spec: ModelSpec, paths: list[Path], mode: ResizeMode = DEFAULT_RESIZE_MODE
) -> np.ndarray:
    """Scores [N,K] from ONNX Runtime on the built graph, fed by dfserve's preprocessing."""
    return onnx_scores(onnx_path, spec, parity_pixels(spec, paths, mode))


def parity_steps(paths: list[Path]) -> int:
    """How many image passes `check_parity` makes (the reference pipeline, then each resize mode): a progress
    bar's total."""
    return len(paths) * (1 + len(RESIZE_MODES))


def check_parity(
    ckpt: Checkpoint,
    model: Any,
    spec: ModelSpec,
    onnx_path: Path,
    paths: list[Path],
    *,
    tolerance: float = TOLERANCE,
    mode: ResizeMode = DEFAULT_RESIZE_MODE,
    advance: Callable[[int], None] | None = None,
) -> ParityResult:
    """Compare reference and candidate on every image, in every resize mode; raise ParityError when the chosen
    mode exceeds `tolerance` on any image or flips any decision (the other modes are only reported)."""
    ref = reference_scores(ckpt, model, spec, paths, advance)
    info = reference_info(ckpt, model)
    names = [p.name for p in paths]
    bar = FidelityBar(max_abs_diff=tolerance, min_agreement=1.0)
    modes: dict[str, dict[str, Any]] = {}
    cand = ref
    for candidate_mode in RESIZE_MODES:
        scores = candidate_scores(onnx_path, spec, paths, candidate_mode)
        drift = compare(ref, scores, spec.labels, names)
        modes[candidate_mode] = {**drift.as_report(), "passes": drift.passes(bar)}
        if advance is not None:
            advance(len(paths))
        if candidate_mode == mode:
            cand = scores
    diff = np.abs(ref - cand).max(axis=1)
    flipped = decisions(ref, spec.labels) != decisions(cand, spec.labels)
    per_image = [
        {"image": p.name, "max_abs_diff": float(d), "decision_agrees": not bool(f), "reference": spec.labels.names[r]}
        for p, d, f, r in zip(paths, diff, flipped, decisions(ref, spec.labels), strict=True)
    ]
    result = ParityResult(
        max_abs_diff=float(diff.max()),
        top1_agreement=float(1.0 - flipped.mean()),
        images=len(paths),
        tolerance=tolerance,
        resize_mode=mode,
        flips=int(flipped.sum()),
        per_image=per_image,
        modes=modes,
        pipeline=info,
        reference=ref,
    )
    failures = [
        f"{r['image']} (|Δ|={r['max_abs_diff']:.2e}{'' if r['decision_agrees'] else ', decision flipped'})"
        for r in per_image
        if r["max_abs_diff"] > tolerance or not r["decision_agrees"]
    ]
    if failures:
        hint = (
            "" if mode == "exact" else f" (resize mode {mode!r}; --resize-mode exact reproduces the processor's pixels)"
        )
        if info.get("library") == "transformers" and info.get("backend") != "pil":
            hint += (
                f"; the reference processor is {info['processor']} (backend {info['backend']}), whose resize is not "
                "Pillow's, which dfserve reproduces: uninstall torchvision from the build environment, or report it"
            )
        raise ParityError(
            f"served model disagrees with the reference pipeline ({_describe(info)}) beyond {tolerance:g} on "
            f"{len(failures)}/{len(paths)} images{hint}: {', '.join(failures)}"
        )
    return result


def _describe(info: dict[str, Any]) -> str:
    return f"{info.get('library')} {info.get('processor')}, backend {info.get('backend')}"

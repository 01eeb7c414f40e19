"""Section 4 of the bench: dfserve's preprocessing against the checkpoint's own Transformers image processor.

Both start from the same JPEG bytes and end with what the model consumes. The reference is what the
Transformers pipeline does: open, `load_image` (EXIF orientation, RGB), then the processor the installed
Transformers picks (Pillow-based: 4.x's slow one, 5.x's Pil backend without torchvision), which also rescales
and normalises; dfserve stops at uint8 pixels because the ONNX graph does the arithmetic.
Both run on one thread, so images/s is per core.

Pixel agreement is checked against the same processor called with rescale and normalisation switched off
(it then returns the resized, cropped pixels as floats holding whole grey levels). Score agreement runs the
built ONNX model on the reference pixels and on each mode's pixels: the parity bar is 1e-4, and for `draft`
(which changes pixels by design) the bench counts how often the top-1 label flips.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dfserve.errors import BenchError
from dfserve.export.checkpoint import resolve
from dfserve.export.parity import processor_backend
from dfserve.export.parity import reference_processor as picked
from dfserve.measure.payloads import EncodedImage
from dfserve.preprocessing import preprocess_bytes
from dfserve.spec.model import RESIZE_MODES, ModelSpec

REFERENCE = "transformers"


def reference_processor(spec: ModelSpec) -> Any:
    """The image processor the installed Transformers picks for the checkpoint (as its pipeline does; with
    Transformers 5 and no torchvision, the Pillow backend), from its preprocessor_config.json."""

    try:
        ckpt = resolve(spec.source, revision=spec.revision, random_weights=True)
    except Exception as exc:
        raise BenchError(f"cannot read the image processor of {spec.source}: {exc}") from exc
    return picked(ckpt)


def _backend(processor: Any) -> str:

    return processor_backend(processor)


def _reference_call(processor: Any, data: bytes, **kwargs: Any) -> np.ndarray:
    from PIL import Image
    from transformers.image_utils import load_image

    image = load_image(Image.open(io.BytesIO(data)))
    return np.asarray(processor(image, return_tensors="np", **kwargs)["pixel_values"][0])


def _time_per_image(fn: Callable[[bytes], object], images: Sequence[EncodedImage], repeats: int) -> dict[str, float]:
    for img in images:  # warm: imports, caches, first-call allocations
        fn(img.data)
    per_image: list[float] = []
    started = time.perf_counter()
    for _ in range(repeats):
        for img in images:
            t = time.perf_counter()
            fn(img.data)
            per_image.append(time.perf_counter() - t)
    total = time.perf_counter() - started
    return {
        "images_per_s": len(per_image) / total,
        "mean_ms": 1000 * float(np.mean(per_image)),
        "median_ms": 1000 * float(np.median(per_image)),
        "timed_calls": len(per_image),
    }


def bench_preprocessing(
    spec: ModelSpec,
    images: Sequence[EncodedImage],
    repeats: int,
    run_model: Callable[[np.ndarray], np.ndarray] | None,
) -> dict[str, Any]:
    """Speed, pixel agreement and score agreement of each resize mode against the reference processor."""
    processor = reference_processor(spec)
    pp, limits = spec.preprocessing, spec.limits
    methods: dict[str, Callable[[bytes], object]] = {REFERENCE: lambda d: _reference_call(processor, d)}
    for mode in RESIZE_MODES:
        methods[mode] = lambda d, m=mode: preprocess_bytes(d, pp, limits, m)  # type: ignore[misc]
    speed = {name: _time_per_image(fn, images, repeats) for name, fn in methods.items()}

    reference = [
        np.rint(_reference_call(processor, img.data, do_rescale=False, do_normalize=False)).astype(np.uint8)
        for img in images
    ]
    ours = {mode: [preprocess_bytes(img.data, pp, limits, mode) for img in images] for mode in RESIZE_MODES}
    ref_scores = run_model(np.stack(reference)) if run_model is not None else None
    ref_speed = speed[REFERENCE]["images_per_s"]
    rows: dict[str, Any] = {REFERENCE: {**speed[REFERENCE], "speedup": 1.0}}
    for mode in RESIZE_MODES:
        diffs = [np.abs(a.astype(np.int16) - r.astype(np.int16)) for a, r in zip(ours[mode], reference, strict=True)]
        row: dict[str, Any] = {
            **speed[mode],
            "speedup": speed[mode]["images_per_s"] / ref_speed,
            "max_pixel_diff": int(max(int(d.max()) for d in diffs)),
            "pixels_differing": float(np.mean([float((d > 0).mean()) for d in diffs])),
            "identical": all(int(d.max()) == 0 for d in diffs),
        }
        if ref_scores is not None and run_model is not None:
            scores = run_model(np.stack(ours[mode]))
            delta = np.abs(scores - ref_scores)
            row["max_score_diff"] = float(delta.max())
            row["mean_score_diff"] = float(delta.mean())
            row["top1_changed"] = int((scores.argmax(1) != ref_scores.argmax(1)).sum())
            row["images_scored"] = len(images)
        rows[mode] = row
    return {
        "reference": f"{type(processor).__name__} (backend {_backend(processor)}) via "
        "transformers.image_utils.load_image",
        "images": [img.describe() for img in images],
        "repeats": repeats,
        "methods": rows,
    }

"""The build's gate for `--decode gpu`: the GPU decode path's drift on the checkpoint being built.

GPU decoding is a shortcut like the `box` and `draft` resize modes: another JPEG decoder (nvJPEG) and PyTorch's
resize instead of Pillow's. Every `--decode gpu` build runs the served path end to end (files decoded, resized
and cropped by `dfserve.engine.gpu_decode`, then the served engine in its precision) on the parity set, compares
the scores with the Transformers pipeline's, records the figures in build_report.json under
`FIDELITY_BARS`' key `decode_gpu`, prints them as a row of the modes table, and fails closed above that bar.

It measures on the build host's GPU where torch sees one, else with the same code on the CPU; the report names the
device and the JPEG decoder that measured it (on a CPU the figures cover the resize arithmetic and the CPU JPEG
decoder, not nvJPEG's: `dfserve verify` against the GPU deployment, or `dfserve bench gpu-decode`, measures that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfserve.engine import torch_module as torch_engine
from dfserve.engine.gpu_decode import DeviceDecoder
from dfserve.errors import InvalidImageError, ParityError
from dfserve.export.fidelity import bar_for, compare
from dfserve.export.policy import DECODE_GPU_BAR
from dfserve.spec.model import Limits, ModelSpec


def measure_device() -> str:
    """Where the build measures the GPU decode path: the build host's GPU, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def decode_gpu_drift(
    spec: ModelSpec, engine: torch.nn.Module, images: list[Path], reference: np.ndarray, device: str | None = None
) -> dict[str, Any]:
    """The served GPU decode path (decoder on `device`, then `engine`) against the reference pipeline's scores on
    `images`; raises ParityError when it fails `FIDELITY_BARS["decode_gpu"]`. Returns the report entry."""
    device = device or measure_device()
    unlimited = Limits(max_file_bytes=2**62, max_pixels=2**62, max_aspect_ratio=1e9)  # parity checks arithmetic
    decoder = DeviceDecoder(spec.preprocessing, unlimited, device)
    decoded = decoder([p.read_bytes() for p in images])
    if decoded.errors:
        first = min(decoded.errors)
        error: InvalidImageError = decoded.errors[first]
        raise ParityError(f"the GPU decode path refused parity image {images[first].name}: {error}")
    candidate = torch_engine.scores(engine, decoded.pixels.cpu().numpy())
    names = [p.name for p in images]
    drift = compare(reference, candidate, spec.labels, names)
    bar = bar_for(DECODE_GPU_BAR)
    problems = drift.problems(bar)
    if problems:
        raise ParityError(
            f"--decode gpu is too far from the Transformers pipeline on this checkpoint: {'; '.join(problems)} "
            "(build with --decode cpu, the exact path)"
        )
    return {
        **drift.as_report(),
        "passes": True,
        "bar": bar.model_dump(),
        "device": device,
        "jpeg_decoder": decoder.jpeg_decoder,
        "decoded_on_device": [names[i] for i in decoded.on_device],
        "fallback_to_cpu": [names[i] for i in range(len(names)) if i not in set(decoded.on_device)],
    }

"""The DALI pipeline for NVIDIA's Triton container: image files to the engine's uint8 pixels on the GPU.

In NVIDIA's tritonserver image the DALI backend is the way to decode on the GPU next to a TensorRT `vit`
(`image → DALI preprocess → vit`): `fn.decoders.image` with `device="mixed"` parses on the CPU and decodes with
nvJPEG (the hardware JPEG decoders of A100/H100 where present), then resize and crop run on the GPU and the
pixels go to TensorRT without a trip through host memory. `serialize` writes the pipeline as the DALI backend's
`model.dali`.

The policy follows `dfserve.preprocessing` step for step, from the spec:
- EXIF orientation applied (`adjust_orientation`, DALI's default), RGB out;
- the resize size computed per image from the header (`fn.peek_image_shape`) with Transformers' rounding
  (the shorter edge to `size`, the longer one `floor(size * long / short)`), or the fixed (height, width);
- the processor's filter (nearest, bilinear, bicubic, lanczos) antialiased, like Pillow's;
- the centre crop at Transformers' offsets (`floor((resized - crop) / 2)`), padded with zeros where the image is
  smaller than the crop; then HWC → CHW.

A DALI batch fails as a whole when one file in it cannot be decoded, and the pipeline is unusable afterwards;
`run_isolated` shows the remedy (a fresh pipeline, the batch again file by file, so only the bad file fails), which
the serving side must apply (docs/gpu.md: the container wiring is not built yet). `device="cpu"` runs the same
pipeline on the CPU: the project's CPU machines test it so (tests/dali/), with DALI's wheel in a separate
environment."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfserve.spec.model import ModelSpec, Preprocessing

DALI_FILENAME = "model.dali"

_INTERP = {0: "INTERP_NN", 1: "INTERP_LANCZOS3", 2: "INTERP_LINEAR", 3: "INTERP_CUBIC"}
"""Pillow filter code -> DALI interpolation (Pillow's box and hamming have none: such a checkpoint decodes on
the CPU)."""


def _resize_size(pp: Preprocessing, shape: Any) -> Any:
    """Per image [height, width] (float) after the processor's resize, from the [H, W, C] header shape."""
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    if pp.resize == "fixed":
        assert isinstance(pp.size, tuple)
        return fn.constant(fdata=[float(pp.size[0]), float(pp.size[1])])
    assert isinstance(pp.size, int)
    h = fn.cast(shape[0], dtype=types.FLOAT)
    w = fn.cast(shape[1], dtype=types.FLOAT)
    short = dmath.min(h, w)
    return fn.stack(dmath.floor(pp.size * h / short), dmath.floor(pp.size * w / short))


def build_pipeline(
    spec: ModelSpec, *, batch_size: int, device: str = "mixed", num_threads: int = 4, device_id: int | None = 0
) -> Any:
    """The pipeline for `spec` (`device`: "mixed" decodes on the GPU, "cpu" runs everything on the CPU)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    pp = spec.preprocessing
    if pp.resample not in _INTERP:
        raise ValueError(f"DALI has no counterpart of the {pp.resample_name} filter: decode on the CPU")
    interp = getattr(types, _INTERP[pp.resample])
    gpu = device != "cpu"

    # one batch in, one batch out (no prefetching): the serving side feeds a batch and waits for its pixels
    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id if gpu else None,
        prefetch_queue_depth=1,
        exec_async=False,
        exec_pipelined=False,
    )
    def preprocess() -> Any:
        files = fn.external_source(name=spec.tensors.image, dtype=types.UINT8, ndim=1)
        shape = fn.peek_image_shape(files)
        images = fn.decoders.image(files, device=device, output_type=types.RGB)
        size = _resize_size(pp, shape)
        resized = fn.resize(images, size=size, interp_type=interp, antialias=pp.resample != 0)
        if pp.crop is not None:
            ch, cw = pp.crop
            top = dmath.floor((size[0] - ch) / 2)
            left = dmath.floor((size[1] - cw) / 2)
            resized = fn.slice(
                resized,
                start=fn.cast(fn.stack(top, left), dtype=types.INT32),
                shape=[ch, cw],
                axes=[0, 1],
                out_of_bounds_policy="pad",
                fill_values=0,
            )
        return fn.transpose(resized, perm=[2, 0, 1], output_layout="CHW")

    pipe = preprocess()
    return pipe


def serialize(spec: ModelSpec, path: Path, *, batch_size: int, device: str = "mixed") -> Path:
    """Write the pipeline as the DALI backend's model file: the GPU (`mixed`) one, which DALI serialises only on
    a host with CUDA; `device="cpu"` (tests) the same graph on the CPU."""
    pipe = build_pipeline(spec, batch_size=batch_size, device=device)
    pipe.serialize(filename=str(path))
    return path


def run_isolated(make_pipe: Callable[[], Any], files: Sequence[bytes], name: str) -> list[np.ndarray | Exception]:
    """Pixels [3,H,W] (or the error) per file: the whole batch at once, and only if DALI refuses it, file by file,
    so one bad file fails alone. DALI 2.4 leaves a pipeline unusable after an error ("Current pipeline object is
    no longer valid"), so `make_pipe` builds a fresh one (batch size ≥ len(files)) after every failure."""
    pipe = make_pipe()

    def run(batch: Sequence[bytes]) -> list[np.ndarray]:
        pipe.feed_input(name, [np.frombuffer(d, dtype=np.uint8) for d in batch])
        (out,) = pipe.run()
        out = out.as_cpu() if hasattr(out, "as_cpu") else out
        return [np.array(out.at(i)) for i in range(len(batch))]

    try:
        return list(run(files))
    except Exception:  # one error for the batch, which does not say which file
        pipe = make_pipe()
    results: list[np.ndarray | Exception] = []
    for data in files:
        try:
            results.append(run([data])[0])
        except Exception as exc:
            results.append(exc)
            pipe = make_pipe()
    return results

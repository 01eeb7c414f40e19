"""`--decode gpu`: image files to the engine's uint8 pixels on the engine's device, batched.

Why: on a GPU host the exact CPU path (`dfserve.preprocessing`, about 70 one-megapixel JPEGs per core and second)
feeds a fraction of what the engine computes (docs/benchmarks.md). Here JPEGs are decoded by
`torchvision.io.decode_jpeg` with a list of files and `device="cuda"` (nvJPEG, batched; the hardware JPEG decoders
of A100/H100 where present), oriented, resized with PyTorch's antialiased filter (the Pillow filter's kernel) and
centre-cropped on the device, so the pixels reach the engine without a trip through host memory.

What goes where, per image (one bad file never fails its batch-mates):

- Every file is opened with `dfserve.preprocessing.open_image` first: its size, the pixel count and the aspect
  ratio are checked from the header (`Limits`) before anything is allocated on the device, and a file that is
  not an image is refused there, alone.
- Baseline and progressive JPEGs in RGB or grey that end with their end-of-image marker go to the device decoder.
  Everything else (PNG, WebP, GIF, TIFF, BMP, CMYK/YCCK JPEGs) takes the exact CPU path, and so does a JPEG the
  device decoder refuses: when a batched decode fails, its files are decoded one by one, and the one that fails
  again falls back to the CPU path, where a truly corrupt file gets its `InvalidImageError` (a 400 for its request
  only).
- Device decoding is chunked so that one call decodes at most `MAX_BATCH_PIXELS` pixels (64 files at the
  50-megapixel limit would otherwise ask for 9.6 GB at once).

The pixels differ from the exact path (another JPEG decoder's IDCT and chroma upsampling, PyTorch's resize
arithmetic): a shortcut like the `box` and `draft` resize modes, whose drift every `--decode gpu` build measures
on its checkpoint against the Transformers pipeline and holds to `FIDELITY_BARS["decode_gpu"]`.

The same code runs on the CPU (`device="cpu"`): that is how the project's CPU machines test it. torchvision is
imported lazily (the SDK and the CPU path do not need it). Where it cannot be imported and the device is the CPU,
Pillow decodes the JPEGs instead (libjpeg-turbo, as torchvision's CPU decoder) and everything after the decode is
the same; `DeviceDecoder.jpeg_decoder` says which ran, and the build report records it. On a CUDA device without
torchvision the decoder refuses to start: there is no device decode without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dfserve.errors import DecodeChoiceError, InvalidImageError, UndecodableImageError
from dfserve.preprocessing import open_image, preprocess_bytes, resized_size
from dfserve.spec.model import RESAMPLE_NAMES, Limits, Preprocessing

log = logging.getLogger(__name__)

DEVICE_FILTERS: dict[int, str] = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}
"""Pillow filter code -> `torch.nn.functional.interpolate` mode. Bilinear and bicubic run antialiased, which is
Pillow's kernel (PyTorch's antialiased bicubic uses Pillow's a = -0.5); nearest-exact is Pillow's nearest. Pillow's
lanczos, box and hamming have no device counterpart: such a checkpoint builds with `--decode cpu`."""

GPU_DECODED_MODES = ("RGB", "L")
"""JPEG colour modes (as Pillow reads the header) the device decoder takes; CMYK and YCCK go to the CPU path."""

MAX_BATCH_PIXELS = 256_000_000
"""At most this many decoded pixels per device decode call (768 MB of RGB)."""

TORCHVISION = "torchvision.io.decode_jpeg"
PILLOW_STANDIN = "pillow (torchvision not importable; CPU only)"


def check_supported(pp: Preprocessing) -> None:
    """Refuse, in one line, a preprocessing policy the device path cannot reproduce."""
    if pp.resample not in DEVICE_FILTERS:
        raise DecodeChoiceError(
            f"--decode gpu resizes with nearest, bilinear or bicubic; this checkpoint's processor resizes with "
            f"{RESAMPLE_NAMES[pp.resample]}: build with --decode cpu"
        )


@dataclass
class Decoded:
    """The outcome of one batch: pixels for the files that decoded, an error for each that did not."""

    pixels: torch.Tensor
    """uint8 [M,3,H,W] on the decoder's device, one row per good file, in the files' order."""
    rows: list[int]
    """For each row of `pixels`, the index of its file in the batch."""
    errors: dict[int, InvalidImageError] = field(default_factory=dict)
    """File index -> why it was refused."""
    on_device: list[int] = field(default_factory=list)
    """Indices of the files the device decoder decoded (the others took the exact CPU path)."""


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception as exc:  # EXIF is read from the file: a corrupt block is the file's problem
        raise UndecodableImageError(f"corrupt {img.format or 'image'} metadata (EXIF): {exc}") from exc


def orient(chw: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to a [C,H,W] tensor as Pillow's `ImageOps.exif_transpose` does."""
    h_flip, v_flip = (lambda t: t.flip(-1)), (lambda t: t.flip(-2))
    transpose = lambda t: t.transpose(-1, -2)  # noqa: E731
    ops: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
        2: h_flip,
        3: lambda t: t.flip(-1).flip(-2),
        4: v_flip,
        5: transpose,
        6: lambda t: transpose(t).flip(-1),
        7: lambda t: transpose(t).flip(-1).flip(-2),
        8: lambda t: transpose(t).flip(-2),
    }
    op = ops.get(orientation)
    return op(chw) if op else chw


def _center_crop(chw: torch.Tensor, ch: int, cw: int) -> torch.Tensor:
    """Transformers' `center_crop`, zero padding included (as `dfserve.preprocessing._center_crop`)."""
    _, h, w = chw.shape
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0:
        return chw[:, top : top + ch, left : left + cw]
    nh, nw = max(ch, h), max(cw, w)
    padded = chw.new_zeros((chw.shape[0], nh, nw))
    tp, lp = -(-(nh - h) // 2), -(-(nw - w) // 2)
    padded[:, tp : tp + h, lp : lp + w] = chw
    top, left = top + tp, left + lp
    return padded[:, top : top + ch, left : left + cw]


def resize_and_crop(chw: torch.Tensor, pp: Preprocessing) -> torch.Tensor:
    """uint8 RGB [3,h,w] on any device -> uint8 [3,H,W] on the same device, following the checkpoint's policy."""
    mode = DEVICE_FILTERS[pp.resample]
    _, h, w = chw.shape
    rh, rw = resized_size(pp, w, h)
    x = chw.unsqueeze(0).to(torch.float32)
    if mode == "nearest-exact":
        y = F.interpolate(x, size=(rh, rw), mode=mode)
    else:
        y = F.interpolate(x, size=(rh, rw), mode=mode, align_corners=False, antialias=True)
    out = y.round_().clamp_(0, 255).to(torch.uint8)[0]
    if pp.crop is not None:
        out = _center_crop(out, *pp.crop)
    return out


def _import_decode_jpeg() -> Callable[..., Any] | None:
    try:
        from torchvision.io import decode_jpeg
    except Exception as exc:  # ImportError, or a torchvision built for another torch ("torchvision::nms")
        log.info("torchvision is not importable (%s)", exc)
        return None
    return decode_jpeg


class DeviceDecoder:
    """Files to pixels on `device` for one checkpoint's policy; call it with a batch of encoded files."""

    def __init__(self, pp: Preprocessing, limits: Limits, device: str | torch.device = "cpu") -> None:
        check_supported(pp)
        self.pp, self.limits, self.device = pp, limits, torch.device(device)
        self._decode_jpeg = _import_decode_jpeg()
        if self._decode_jpeg is None and self.device.type != "cpu":
            raise DecodeChoiceError(
                f"--decode gpu needs torchvision on the serving host to decode on {self.device}; "
                "install torchvision matching torch, or build with --decode cpu"
            )
        self.jpeg_decoder = TORCHVISION if self._decode_jpeg is not None else PILLOW_STANDIN
        if self._decode_jpeg is None:
            log.warning("GPU-decode path on the CPU without torchvision: Pillow decodes the JPEGs (tests only)")

    def __call__(self, files: Sequence[bytes]) -> Decoded:
        errors: dict[int, InvalidImageError] = {}
        device_jobs: list[tuple[int, bytes, int, int]] = []  # index, data, orientation, pixels
        cpu_jobs: list[int] = []
        for i, data in enumerate(files):
            try:
                img = open_image(data, self.limits)
                if img.format == "JPEG" and img.mode in GPU_DECODED_MODES and _ends_with_eoi(data):
                    device_jobs.append((i, data, _orientation(img), img.width * img.height))
                else:
                    cpu_jobs.append(i)
            except InvalidImageError as exc:
                errors[i] = exc
        out: dict[int, torch.Tensor] = {}
        for chunk in _chunks(device_jobs, MAX_BATCH_PIXELS):
            decoded = self._decode_chunk([data for _, data, _, _ in chunk])
            for (i, _, orientation, _), image in zip(chunk, decoded, strict=True):
                if image is None:
                    cpu_jobs.append(i)  # refused by the device decoder: the exact path decides
                else:
                    out[i] = resize_and_crop(orient(image, orientation), self.pp)
        on_device = sorted(out)
        for i in sorted(cpu_jobs):
            try:
                exact = preprocess_bytes(files[i], self.pp, self.limits, "exact")
            except InvalidImageError as exc:
                errors[i] = exc
                continue
            out[i] = torch.from_numpy(exact).to(self.device, non_blocking=True)
        rows = sorted(out)
        h, w = self.pp.output_hw
        pixels = (
            torch.stack([out[i] for i in rows])
            if rows
            else torch.empty((0, 3, h, w), dtype=torch.uint8, device=self.device)
        )
        return Decoded(pixels=pixels, rows=rows, errors=errors, on_device=on_device)

    def _decode_chunk(self, datas: list[bytes]) -> list[torch.Tensor | None]:
        """Decode JPEGs as one batch; if the batch fails, one by one, with None for each file that fails alone."""
        if self._decode_jpeg is None:
            return [self._pillow_decode(d) for d in datas]
        from torchvision.io import ImageReadMode

        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        try:
            return list(self._decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError as exc:
            log.info("batched device decode of %d files failed (%s): decoding them one by one", len(datas), exc)
        single: list[torch.Tensor | None] = []
        for t in tensors:
            try:
                single.append(self._decode_jpeg(t, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError:
                single.append(None)
        return single

    def _pillow_decode(self, data: bytes) -> torch.Tensor | None:
        """The stand-in for torchvision's CPU decoder (both are libjpeg-turbo): RGB [3,h,w], no EXIF applied."""
        import io

        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = np.asarray(img.convert("RGB"))
        except Exception:  # Pillow raises many types for corrupt data; the exact path names the problem
            return None
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def _ends_with_eoi(data: bytes) -> bool:
    """Whether the JPEG's end-of-image marker is there (near the end): a truncated file, which libjpeg and nvJPEG
    may decode with grey rows where Pillow refuses it, goes to the exact path, which refuses it with a 400."""
    return data.rfind(b"\xff\xd9", max(0, len(data) - 65536)) >= 0


def _chunks(jobs: list[tuple[int, bytes, int, int]], budget: int) -> list[list[tuple[int, bytes, int, int]]]:
    """Consecutive groups of jobs whose pixel counts sum to at most `budget` (a lone larger job is its own group)."""
    groups: list[list[tuple[int, bytes, int, int]]] = []
    total = 0
    for job in jobs:
        if not groups or total + job[3] > budget:
            groups.append([])
            total = 0
        groups[-1].append(job)
        total += job[3]
    return groups


def decode_pixels(files: Sequence[bytes], pp: Preprocessing, limits: Limits, device: str = "cpu") -> np.ndarray:
    """uint8 [N,3,H,W] numpy for files that must all decode (the build's drift measurement): raises the first
    file's InvalidImageError otherwise."""
    decoded = DeviceDecoder(pp, limits, device)(files)
    if decoded.errors:
        first = min(decoded.errors)
        raise decoded.errors[first]
    return decoded.pixels.cpu().numpy()

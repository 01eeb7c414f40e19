"""Image bytes to the engine's uint8 pixels: the single implementation used by the build's parity check, the
server's `preprocess` model and the SDK's local mode.

It reproduces what the Transformers pipeline does with the checkpoint's own (Pillow-backed) image processor:
`transformers.image_utils.load_image` (EXIF orientation, then RGB), a Pillow resize with the processor's
filter, and the processor's centre crop; and, for timm checkpoints, timm's eval transform (torchvision's
`Resize` on a Pillow image is the same Pillow resize; its `CenterCrop` rounds odd margins: `crop_rounding`).
Rescale and normalisation are not done here: they are part of the ONNX graph, so the wire carries uint8
(4x fewer bytes than float32) and the server cannot drift from the build.

Three resize modes, fastest last:

- ``exact``: resize the whole image, then crop. Pixel-identical to the Transformers processor.
- ``box`` (default): resize only the region that the crop keeps (Pillow's ``box``), in the same pass order
  as the full resize. The filter's scale and sample positions are the same; only the float arithmetic of the
  box offsets differs, so a pixel may round the other way: by one grey level, and on a handful of pixels per
  million by two, where both passes round the same way (`dfserve bench` reports the figures). The work is
  proportional to the crop instead of the whole resized image: about 2x the Transformers processor's speed.
- ``draft``: additionally let the JPEG decoder downscale by 1/2, 1/4 or 1/8 while decoding. About 3x faster
  on large JPEGs but it changes pixels beyond rounding: a forensic detector reads fine detail that this can
  erase, so it is opt-in only and `dfserve bench` reports how much it moves the scores.

Input that is not a decodable image raises a subclass of `InvalidImageError` naming the problem; the
pixel-count limit is checked from the header, before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dfserve.errors import (
    DecodeCostError,
    EmptyImageError,
    ExtremeAspectRatioError,
    ImageTooLargeError,
    InvalidImageError,
    TooManyPixelsError,
    UndecodableImageError,
    UnsupportedFormatError,
)
from dfserve.spec.model import DEFAULT_RESIZE_MODE, Limits, Preprocessing, ResizeMode

ImageInput: TypeAlias = "bytes | bytearray | memoryview | str | Path | IO[bytes] | Image.Image | np.ndarray"

_DEFAULT_LIMITS = Limits()

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
"""The formats the README promises, as Pillow names them (its JPEG opener also reads MPO, the multi-picture JPEG
many cameras write, as its first frame). Given to ``Image.open(formats=...)``, so no other decoder is even tried
on uploaded bytes: not EPS (Pillow hands it to Ghostscript), nor DDS, ICNS, IM, JPEG 2000, MSP, PCX, PPM, QOI,
SGI, SPIDER, TGA, XBM."""

MAX_JPEG_SCANS = 100
"""Most scans (SOS markers) a JPEG may hold. A baseline JPEG has one per component group (1-3); libjpeg's
progressive script (``jpeg_simple_progression``) writes 10 for colour, 6 for greyscale, mozjpeg's optimised
scripts about as many, and an EXIF thumbnail or an MPO's second frame adds its own. Each extra scan makes the
decoder walk every coefficient again (5.8 ms per scan at 49 MP, for 75 bytes of file), so a few thousand
repeated scans are minutes of CPU: no encoder writes more than a few dozen."""

JPEG_SCAN_BUDGET = 20
"""Per-image decode budget, in full-image passes: scans × pixels may not exceed this × `Limits.max_pixels`. A
small image may use all `MAX_JPEG_SCANS`; one at the pixel limit may have 20 scans (twice libjpeg's progressive
script), so the extra work of scans is bounded by about 20 passes over the largest image allowed (0.1 s here)."""


def use_configured_limits_only() -> None:
    """Let `Limits.max_pixels` alone guard decoding in this process, instead of Pillow's process-wide default
    (89.5 M pixels, which would refuse images a larger configured limit allows and quote Pillow's numbers).
    Only for processes that open images through `open_image` alone, such as the server's `preprocess` stubs:
    `open_image` checks the header's size against the configured limit before any pixel is decoded."""
    Image.MAX_IMAGE_PIXELS = None


def open_image(data: bytes | bytearray | memoryview, limits: Limits = _DEFAULT_LIMITS) -> Image.Image:
    """Open encoded bytes, enforcing the limits before decoding. Returns an unloaded Pillow image."""
    size = len(data)
    if size == 0:
        raise EmptyImageError("empty image: the request carried 0 bytes")
    if size > limits.max_file_bytes:
        raise ImageTooLargeError(f"image file is {size} bytes, above the limit of {limits.max_file_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(bytes(data)), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own process-wide guard fired before ours could read the size. The server's `preprocess`
        # process lifts Pillow's guard (`use_configured_limits_only`), so there only the configured limit applies.
        raise TooManyPixelsError(
            f"image refused before decoding: more pixels than Pillow's process-wide limit of "
            f"{Image.MAX_IMAGE_PIXELS} (the configured limit is {limits.max_pixels})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise _unsupported(bytes(data[:64]), size) from exc
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise UndecodableImageError(f"truncated or corrupt image file (header): {exc}") from exc
    check_size(img.width, img.height, limits)
    if img.format in ("JPEG", "MPO"):
        check_jpeg_scans(bytes(data), img.width * img.height, limits)
    return img


def _unsupported(head: bytes, size: int) -> InvalidImageError:
    """Why Pillow found no allowed format: another format it knows (named from the plugins' signature checks
    alone, nothing is parsed), or no image at all."""
    Image.init()
    for fmt, (_, accept) in Image.OPEN.items():
        with contextlib.suppress(Exception):
            if fmt not in ALLOWED_FORMATS and accept is not None and accept(head):
                allowed = ", ".join(ALLOWED_FORMATS)
                return UnsupportedFormatError(f"image format {fmt} is not accepted (accepted: {allowed})")
    return UndecodableImageError(f"not an image: no known image format in {size} bytes")


def check_jpeg_scans(data: bytes, pixels: int, limits: Limits) -> None:
    """Refuse, before decoding, a JPEG with no scan (headers and an end marker but no image data: it would
    decode as a uniform grey image and be scored) or with more scans than `MAX_JPEG_SCANS` or the decode budget
    (`JPEG_SCAN_BUDGET`) allow. Counting the SOS marker (FF DA) over the whole file is exact for the image data,
    where every FF byte is stuffed (FF 00); in metadata it can only count too many, and the bound leaves room."""
    scans = data.count(b"\xff\xda")
    if scans == 0:
        raise UndecodableImageError("JPEG has no image data (no scan after its headers)")
    budget = max(1, min(MAX_JPEG_SCANS, JPEG_SCAN_BUDGET * limits.max_pixels // max(1, pixels)))
    if scans > budget:
        raise DecodeCostError(
            f"JPEG has {scans} scans, above the {budget} allowed for {pixels} pixels (encoders write at most a "
            "few dozen; each scan is another pass over the whole image)"
        )


def check_size(width: int, height: int, limits: Limits) -> None:
    """Refuse, from the size alone, an image with no pixels, too many, or an extreme aspect ratio."""
    if width <= 0 or height <= 0:
        raise UndecodableImageError(f"image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise TooManyPixelsError(
            f"image is {width}x{height} = {width * height} pixels, above the limit of {limits.max_pixels} "
            "(refused before decoding)"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise ExtremeAspectRatioError(
            f"image is {width}x{height}, an aspect ratio of {ratio:.0f}:1, above the limit of "
            f"{limits.max_aspect_ratio:g}:1 (refused before decoding: resizing it would cost far more than its size)"
        )


def load_rgb(img: Image.Image, *, draft_to: tuple[int, int] | None = None) -> Image.Image:
    """Decode, apply EXIF orientation and convert to RGB, as `transformers.image_utils.load_image` does.

    `draft_to` (width, height in the file's own orientation) lets a JPEG decoder downscale while decoding.
    """
    try:
        if draft_to is not None and img.format == "JPEG":
            img.draft("RGB", draft_to)
        img.load()
        oriented = ImageOps.exif_transpose(img)
        assert oriented is not None
        return oriented if oriented.mode == "RGB" else oriented.convert("RGB")
    except InvalidImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UndecodableImageError(f"truncated or corrupt {img.format or 'image'} file: {exc}") from exc


def resized_size(pp: Preprocessing, width: int, height: int) -> tuple[int, int]:
    """(height, width) after the processor's resize step, with Transformers' own rounding."""
    if pp.resize == "fixed":
        assert isinstance(pp.size, tuple)
        return pp.size
    assert isinstance(pp.size, int)
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = pp.size, int(pp.size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def crop_offset(size: int, crop: int, pp: Preprocessing) -> int:
    """First kept row (or column) of a centre crop of `crop` out of `size`, rounded as `pp.crop_rounding` says."""
    if pp.crop_rounding == "round":
        return round((size - crop) / 2.0)  # Python's round: half to even, as torchvision's int(round(...))
    return (size - crop) // 2


def resize_and_crop(img: Image.Image, pp: Preprocessing, mode: ResizeMode = DEFAULT_RESIZE_MODE) -> np.ndarray:
    """RGB Pillow image to uint8 [3,H,W] following the checkpoint's policy."""
    rh, rw = resized_size(pp, img.width, img.height)
    if pp.crop is None:
        out = img.resize((rw, rh), resample=pp.resample)
        return _chw(out)
    ch, cw = pp.crop
    top, left = crop_offset(rh, ch, pp), crop_offset(rw, cw, pp)
    if pp.crop_rounding == "round" and (top < 0 or left < 0):
        # torchvision pads before cropping with other offsets than Transformers; no timm eval transform that
        # dfserve maps can get here (its resize is never smaller than its crop), so refuse rather than guess
        raise ValueError(f"a {rh}x{rw} resize is smaller than the {ch}x{cw} torchvision centre crop")
    if mode != "exact" and top >= 0 and left >= 0:
        return _chw(_resize_region(img, (rw, rh), (left, top, left + cw, top + ch), pp.resample))
    resized = img.resize((rw, rh), resample=pp.resample)
    if top >= 0 and left >= 0:  # the crop only selects pixels: take them before converting, not after
        return _chw(resized.crop((left, top, left + cw, top + ch)))
    return _center_crop(_chw(resized), ch, cw)


def _vertical_first_rule(w: int, h: int, ow: int, oh: int) -> bool:
    """Pillow 13's order for a full resize: vertical pass first when the height shrinks, by more than twice as many
    pixels as the width (python-pillow/Pillow#9549); older Pillow always starts with the horizontal pass."""
    return h > oh and h - oh > 2 * (w - ow)


def _probe_pass_order() -> Callable[[int, int, int, int], bool] | None:
    """Which pass-order rule the installed Pillow follows, checked on tiny images at import; None if neither
    known rule explains it (then `box` mode falls back to exact resizing rather than guess)."""
    rng = np.random.default_rng(0)
    rules: dict[str, Callable[[int, int, int, int], bool]] = {
        "size_rule": _vertical_first_rule,
        "horizontal_first": lambda w, h, ow, oh: False,
    }
    probes = ((9, 64, 7, 16), (64, 9, 16, 7), (20, 30, 12, 21), (13, 50, 40, 17), (40, 44, 30, 12))
    for rule in rules.values():
        for w, h, ow, oh in probes:
            img = Image.fromarray(rng.integers(0, 2, (h, w, 3), dtype=np.uint8) * 255, "RGB")
            full = np.asarray(img.resize((ow, oh), resample=3))
            first, second = ((w, oh), (ow, oh)) if rule(w, h, ow, oh) else ((ow, h), (ow, oh))
            if not np.array_equal(full, np.asarray(img.resize(first, resample=3).resize(second, resample=3))):
                break
        else:
            return rule
    return None


_PASS_ORDER = _probe_pass_order()


def _resize_region(
    img: Image.Image, size: tuple[int, int], region: tuple[int, int, int, int], resample: int
) -> Image.Image:
    """The `region` (left, top, right, bottom, in resized coordinates) of `img.resize(size)`, computing only it.

    Pillow resizes in two passes, rounding to uint8 in between, and picks their order from the input and
    output sizes. Where a `box` call would pick the same order as the full resize (the reference), one call
    does it: same filter scale and sample positions, only the float arithmetic of the box offsets differs,
    which can move a pixel by one grey level. Where the orders differ (the intermediate rounding and clipping
    would then move pixels by many grey levels on sharp edges), the two passes run explicitly in the
    reference's order.
    """
    (rw, rh), (x0, y0, x1, y1) = size, region
    if _PASS_ORDER is None:  # a Pillow whose pass order we do not know: resize everything
        return img.resize(size, resample=resample).crop(region)
    w, h, cw, ch = img.width, img.height, x1 - x0, y1 - y0
    sx, sy = w / rw, h / rh
    reference_vertical_first = _PASS_ORDER(w, h, rw, rh)
    if reference_vertical_first == _PASS_ORDER(w, h, cw, ch):
        return img.resize((cw, ch), resample=resample, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    if reference_vertical_first:
        cols = img.resize((w, ch), resample=resample, box=(0, y0 * sy, w, y1 * sy))
        return cols.resize((cw, ch), resample=resample, box=(x0 * sx, 0, x1 * sx, ch))
    rows = img.resize((cw, h), resample=resample, box=(x0 * sx, 0, x1 * sx, h))
    return rows.resize((cw, ch), resample=resample, box=(0, y0 * sy, cw, y1 * sy))


def _chw(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def _center_crop(chw: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """Transformers' `center_crop`, zero padding included for images smaller than the crop."""
    _, h, w = chw.shape
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0:
        return np.ascontiguousarray(chw[:, top : top + ch, left : left + cw])
    nh, nw = max(ch, h), max(cw, w)
    padded = np.zeros((chw.shape[0], nh, nw), dtype=chw.dtype)
    tp, lp = -(-(nh - h) // 2), -(-(nw - w) // 2)
    padded[:, tp : tp + h, lp : lp + w] = chw
    top, left = top + tp, left + lp
    return np.ascontiguousarray(padded[:, top : top + ch, left : left + cw])


def _draft_target(img: Image.Image, pp: Preprocessing) -> tuple[int, int]:
    """The smallest (width, height), in the file's orientation, that the resize step can start from."""
    orientation = img.getexif().get(0x0112, 1)
    w, h = (img.height, img.width) if orientation in (5, 6, 7, 8) else (img.width, img.height)
    rh, rw = resized_size(pp, w, h)
    return (rh, rw) if orientation in (5, 6, 7, 8) else (rw, rh)


def preprocess_bytes(
    data: bytes | bytearray | memoryview,
    pp: Preprocessing,
    limits: Limits = _DEFAULT_LIMITS,
    mode: ResizeMode = DEFAULT_RESIZE_MODE,
) -> np.ndarray:
    """Encoded image file to uint8 [3,H,W]. Raises InvalidImageError for bad input."""
    img = open_image(data, limits)
    try:
        draft_to = _draft_target(img, pp) if mode == "draft" else None
    except Exception as exc:  # EXIF is read from the file: a corrupt block fails here, before decoding
        raise UndecodableImageError(f"corrupt {img.format or 'image'} metadata (EXIF): {exc}") from exc
    return resize_and_crop(load_rgb(img, draft_to=draft_to), pp, mode)


def read_image_bytes(image: ImageInput, limits: Limits = _DEFAULT_LIMITS) -> bytes | None:
    """The encoded bytes of a path, bytes-like or binary file object; None for decoded inputs.

    A path must name a regular file (opening a named pipe blocks until a writer comes, past any timeout) no
    larger than `limits.max_file_bytes`, checked from its size before reading, so that `/dev/zero` or a video
    named .jpg costs nothing; a file object is read up to that bound."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | Path):
        path = Path(image)
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise InvalidImageError(f"no such file: {path}") from exc
        if stat.S_ISDIR(st.st_mode):
            raise InvalidImageError(f"is a directory, not an image: {path}")
        if not stat.S_ISREG(st.st_mode):
            raise InvalidImageError(f"not a regular file (a pipe, socket or device), not an image: {path}")
        _check_bytes(st.st_size, limits)
        with path.open("rb") as f:
            data = f.read(limits.max_file_bytes + 1)
        _check_bytes(len(data), limits)  # the file grew since stat
        return data
    if hasattr(image, "read"):
        data = image.read(limits.max_file_bytes + 1)
        if not isinstance(data, bytes):
            raise InvalidImageError("file object must be opened in binary mode")
        _check_bytes(len(data), limits)
        return data
    return None


def _check_bytes(size: int, limits: Limits) -> None:
    if size > limits.max_file_bytes:
        raise ImageTooLargeError(f"image file is {size} bytes, above the limit of {limits.max_file_bytes} bytes")


def array_to_image(arr: np.ndarray) -> Image.Image:
    """HWC (or HW) uint8 RGB array to a Pillow image, refusing ambiguous layouts."""
    if arr.dtype != np.uint8:
        raise InvalidImageError(f"image array must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L").convert("RGB")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(arr[:, :, :3]), mode="RGB")
    raise InvalidImageError(f"image array must be HxWx3 (RGB) or HxW (grey), got shape {arr.shape}")


def preprocess(
    image: ImageInput,
    pp: Preprocessing,
    limits: Limits = _DEFAULT_LIMITS,
    mode: ResizeMode = DEFAULT_RESIZE_MODE,
) -> np.ndarray:
    """Any supported input (path, bytes, binary file, PIL image, HWC uint8 array) to uint8 [3,H,W]."""
    data = read_image_bytes(image, limits)
    if data is not None:
        return preprocess_bytes(data, pp, limits, mode)
    if isinstance(image, Image.Image):
        check_size(image.width, image.height, limits)
        return resize_and_crop(load_rgb(image.copy()), pp, mode)
    if isinstance(image, np.ndarray):
        check_size(image.shape[1] if image.ndim > 1 else 0, image.shape[0], limits)
        return resize_and_crop(array_to_image(image), pp, mode)
    raise InvalidImageError(
        f"unsupported image input {type(image).__name__}: pass a path, bytes, a binary file object, "
        "a PIL image or an HxWx3 uint8 numpy array"
    )


def normalize(pixels: np.ndarray, pp: Preprocessing) -> np.ndarray:
    """What the ONNX graph does to the uint8 pixels, in numpy: for tests and for the PyTorch benchmarks."""
    x = pixels.astype(np.float32)
    if pp.do_rescale:
        x = x * np.float32(pp.rescale_factor)
    if pp.do_normalize:
        mean = np.asarray(pp.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(pp.std, dtype=np.float32).reshape(3, 1, 1)
        x = (x - mean) / std
    return x

"""The images a load test or benchmark sends: a folder the user names, or generated ones.

Generated images are meant to cost the server what real photographs cost. A JPEG's decode time grows with
its pixel count and its encoded size with its detail, so the generator draws photo-like content (smooth
colour fields, edges and mid-frequency structure, a little sensor noise) at the sizes cameras and phones
produce, encoded at the JPEG qualities found in the wild. Pure noise would be several times larger than a
photograph of the same size, and a flat gradient several times smaller; both would give misleading numbers.

Everything here is deterministic for a given seed, so two runs send the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dfserve.errors import InvalidImageError, PayloadError
from dfserve.preprocessing import preprocess_bytes
from dfserve.spec.model import DEFAULT_RESIZE_MODE, ModelSpec, ResizeMode
from dfserve.spec.names import IMAGE_SUFFIXES

# (width, height): VGA, SVGA, XGA, 720p, square social-media upload, 2MP, 1080p, a 12 MP phone photo (portrait).
REALISTIC_SIZES: tuple[tuple[int, int], ...] = (
    (640, 480),
    (800, 600),
    (1024, 768),
    (1280, 720),
    (1024, 1024),
    (1600, 1200),
    (1920, 1080),
    (3024, 4032),
)
# Camera/phone defaults and what web services re-encode at.
REALISTIC_QUALITIES: tuple[int, ...] = (75, 85, 90, 95)


@dataclass(frozen=True)
class EncodedImage:
    """One image file as it travels on the wire."""

    name: str
    data: bytes
    width: int
    height: int
    format: str
    quality: int | None = None
    """JPEG quality it was encoded at (generated images only)."""

    def describe(self) -> str:
        q = f" q{self.quality}" if self.quality is not None else ""
        return f"{self.name} {self.width}x{self.height} {self.format}{q} {len(self.data) / 1024:.0f} KiB"


def photo_like(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image with the frequency content of a photograph (see the module docstring)."""
    if width < 1 or height < 1:
        raise PayloadError(f"image size must be positive, got {width}x{height}")

    def field(cells_w: int, cells_h: int, amplitude: float) -> np.ndarray:
        small = rng.uniform(0, 255, size=(max(cells_h, 2), max(cells_w, 2), 3)).astype(np.uint8)
        big = Image.fromarray(small, "RGB").resize((width, height), resample=Image.Resampling.BICUBIC)
        return (np.asarray(big, dtype=np.float32) - 127.5) * amplitude

    base = field(4, 3, 0.9) + 127.5
    base += field(max(width // 64, 2), max(height // 64, 2), 0.35)
    # a few hard edges, as objects in a scene have
    for _ in range(6):
        x0, x1 = sorted(rng.integers(0, width, size=2))
        y0, y1 = sorted(rng.integers(0, height, size=2))
        base[y0:y1, x0:x1] += rng.uniform(-40, 40, size=3).astype(np.float32)
    base += rng.normal(0, 4.0, size=base.shape).astype(np.float32)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def generate_images(
    count: int = len(REALISTIC_SIZES),
    *,
    seed: int = 0,
    sizes: Sequence[tuple[int, int]] = REALISTIC_SIZES,
    qualities: Sequence[int] = REALISTIC_QUALITIES,
) -> list[EncodedImage]:
    """`count` JPEGs cycling through `sizes` and `qualities` (deterministic for a seed)."""
    if count < 1:
        raise PayloadError(f"image count must be at least 1, got {count}")
    if not sizes or not qualities:
        raise PayloadError("need at least one size and one JPEG quality to generate images")
    bad = [q for q in qualities if not 1 <= q <= 100]
    if bad:
        raise PayloadError(f"JPEG quality must be 1..100, got {bad}")
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        quality = qualities[i % len(qualities)]
        buf = io.BytesIO()
        photo_like(width, height, rng).save(buf, format="JPEG", quality=quality)
        images.append(
            EncodedImage(
                name=f"generated-{i:03d}-{width}x{height}-q{quality}.jpg",
                data=buf.getvalue(),
                width=width,
                height=height,
                format="JPEG",
                quality=quality,
            )
        )
    return images


def load_folder(folder: str | Path, *, limit: int | None = None) -> list[EncodedImage]:
    """Every image file in `folder` (not recursive), sorted by name; files that are not images are refused
    by name rather than silently skipped, so a typo'd folder does not turn into a half-empty load test."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise PayloadError(f"image folder not found: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PayloadError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    if limit is not None:
        files = files[:limit]
    return [encoded(file.name, file.read_bytes(), where=str(file)) for file in files]


def encoded(name: str, data: bytes, *, where: str | None = None) -> EncodedImage:
    """An image file's bytes with its size and format read from its header (not decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height, fmt = img.width, img.height, str(img.format)
    except (UnidentifiedImageError, OSError) as exc:
        raise PayloadError(f"{where or name} is not a readable image: {exc}") from exc
    return EncodedImage(name=name, data=data, width=width, height=height, format=fmt)


def describe_images(images: Sequence[EncodedImage], origin: str) -> str:
    """The image set in one line, for a summary: `8 sample photographs, 256x256 to 512x512 (median 0.26 MP),
    32-120 KiB`. Said beside every throughput figure because images/s depends on it (decode and resize grow with
    the pixel count): the same server does 15 images/s on 12 MP photographs and 200 on 512x512 ones."""
    if not images:
        return f"no images ({origin})"
    kib = [len(image.data) / 1024 for image in images]
    return _describe_sizes([(image.width, image.height) for image in images], origin) + (
        f", {min(kib):.0f}-{max(kib):.0f} KiB"
    )


def describe_generated(count: int = len(REALISTIC_SIZES)) -> str:
    """`describe_images` of what `generate_images(count)` makes, from its sizes alone (nothing is generated)."""
    sizes = [REALISTIC_SIZES[i % len(REALISTIC_SIZES)] for i in range(count)]
    return _describe_sizes(sizes, "generated photo-like JPEGs")


def _describe_sizes(sizes: Sequence[tuple[int, int]], origin: str) -> str:
    ordered = sorted(sizes, key=lambda wh: wh[0] * wh[1])
    (w0, h0), (w1, h1) = ordered[0], ordered[-1]
    span = f"{w0}x{h0}" if (w0, h0) == (w1, h1) else f"{w0}x{h0} to {w1}x{h1}"
    median_mp = float(np.median([w * h for w, h in sizes])) / 1e6
    return f"{len(sizes)} {origin}, {span} (median {median_mp:.2f} MP)"


def load_images(folder: str | Path | None, *, count: int = len(REALISTIC_SIZES), seed: int = 0) -> list[EncodedImage]:
    """A named folder's images, or `count` generated ones when no folder is given."""
    if folder:
        return load_folder(folder)
    return generate_images(count, seed=seed)


def to_pixels(
    images: Sequence[EncodedImage], spec: ModelSpec, mode: ResizeMode = DEFAULT_RESIZE_MODE
) -> list[np.ndarray]:
    """The engine's uint8 [3,H,W] input for each image, made by dfserve's own preprocessing (the spec's policy)."""
    out = []
    for image in images:
        try:
            out.append(preprocess_bytes(image.data, spec.preprocessing, spec.limits, mode))
        except InvalidImageError as exc:
            raise PayloadError(f"{image.name}: {exc}") from exc
    return out

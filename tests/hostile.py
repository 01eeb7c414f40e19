"""Hostile image files for tests: extreme aspect ratios, decompression bombs and mutated real files of every
format the server decodes. Reused by the preprocessing fuzz and by server-level tests."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png(width: int, height: int, *, header_only: bool = False) -> bytes:
    """A greyscale PNG of `width`x`height` black pixels, streamed so a huge one costs little to build;
    `header_only` gives a valid header with no pixel data (a bomb that announces its size)."""
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    if header_only:
        return head + _chunk(b"IDAT", zlib.compress(b"\0")) + _chunk(b"IEND", b"")
    comp, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []
    block = max(1, (1 << 20) // len(row))
    for start in range(0, height, block):
        parts.append(comp.compress(row * min(block, height - start)))
    parts.append(comp.flush())
    return head + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


EXTREME_ASPECTS = {
    "1x5000000": (1, 5_000_000),
    "5000000x1": (5_000_000, 1),
    "2x4000000": (2, 4_000_000),
    "3000000x3": (3_000_000, 3),
    "1x40000000": (1, 40_000_000),
    "40000000x1": (40_000_000, 1),
}
"""(width, height) of images whose resize, not decode, is the cost: one pixel or a few wide or tall."""


def sample(fmt: str, width: int = 67, height: int = 41, seed: int = 0) -> bytes:
    """A small real file of `fmt` (JPEG with an EXIF orientation, so the EXIF path is exercised)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buf = io.BytesIO()
    if fmt == "JPEG":
        exif = Image.Exif()
        exif[0x0112] = 6
        img.save(buf, fmt, exif=exif.tobytes())
    elif fmt == "GIF":
        img.convert("P").save(buf, fmt)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def mutations(data: bytes, seed: int, count: int) -> Iterator[bytes]:
    """Truncations, byte flips, runs of 0xFF/0x00 and header edits (sizes overwritten with 0, 1 and 2^31-1)."""
    rng = np.random.default_rng(seed)
    n = len(data)
    for cut in (1, 8, 16, 32, n // 4, n // 2, n - 1):
        yield data[:cut]
    for i in range(count):
        buf = bytearray(data)
        kind = i % 4
        if kind == 0:  # byte flips anywhere
            for pos in rng.integers(0, n, int(rng.integers(1, 8))):
                buf[pos] ^= int(rng.integers(1, 256))
        elif kind == 1:  # header edits: the first 64 bytes hold every format's size fields
            pos = int(rng.integers(0, min(64, n - 4)))
            buf[pos : pos + 4] = [b"\0\0\0\0", b"\0\0\0\1", b"\x7f\xff\xff\xff", b"\xff\xff"][int(rng.integers(4))]
        elif kind == 2:  # a run of 0xFF or 0x00 (JPEG markers, zeroed tables)
            pos = int(rng.integers(0, n))
            buf[pos : pos + int(rng.integers(1, 32))] = b"\xff" * 32 if rng.random() < 0.5 else b"\0" * 32
        else:  # truncate after a flip
            buf[int(rng.integers(0, n))] ^= 0x55
            buf = buf[: int(rng.integers(1, n))]
        yield bytes(buf)


def corpus(per_format: int = 60, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) for mutated files of every format."""
    for f, fmt in enumerate(FORMATS):
        for i, data in enumerate(mutations(sample(fmt, seed=seed + f), seed + f, per_format)):
            yield f"{fmt.lower()}-{i}", data


def jpeg_with_repeated_scans(extra_scans: int, width: int = 640, height: int = 480) -> bytes:
    """A progressive JPEG whose smallest scan (an AC refinement of a smooth image: tens of bytes) is repeated
    `extra_scans` times before the end marker: each repeat makes libjpeg walk every coefficient again."""
    import io

    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None].repeat(height, 0).repeat(3, 2)
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    ends = [*starts[1:], data.rindex(b"\xff\xd9")]
    start, end = min(zip(starts, ends, strict=True), key=lambda se: se[1] - se[0])
    eoi = data.rindex(b"\xff\xd9")
    return data[:eoi] + data[start:end] * extra_scans + data[eoi:]

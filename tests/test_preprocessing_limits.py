"""Cost bounded by the output, not the input: extreme aspect ratios are refused from the header in every mode,
images inside the limits resize within a bounded amount of memory, and every failure is an InvalidImageError."""

from __future__ import annotations

import io
import os
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfserve import preprocessing as P
from dfserve.spec.model import RESIZE_MODES, Limits, Preprocessing

CLIP = Preprocessing(resize="shortest_edge", size=440, crop=(384, 384), resample=3)
FIXED = Preprocessing(resize="fixed", size=(384, 384), resample=2)


def png(width: int, height: int) -> bytes:
    """A tiny file of a huge strip: the measured attack (a 19.5 KB PNG of 1 x 5,000,000 pixels)."""
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "PNG", optimize=True)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(1, 5_000_000), (5_000_000, 1), (2, 1_000_000), (40_000_000, 1), (3, 9_000)])
@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("pp", [CLIP, FIXED], ids=["shortest_edge", "fixed"])
def test_extreme_aspect_ratios_are_refused_before_decoding(size: tuple[int, int], mode: str, pp: Preprocessing) -> None:
    data = png(*size)
    assert len(data) < 200_000
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(P.ExtremeAspectRatioError, match=r"aspect ratio of \d+:1, above the limit of 100:1"):
        P.preprocess_bytes(data, pp, Limits(max_pixels=50_000_000), mode)  # type: ignore[arg-type]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20  # nothing of the image's pixels was allocated
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("shape", [(70, 7000), (7000, 70), (100, 10_000)])
def test_the_widest_accepted_images_resize_within_the_stated_bound(mode: str, shape: tuple[int, int]) -> None:
    """At the aspect limit, memory stays within a small multiple of decoded + output + intermediate
    (sqrt(max_pixels x max_aspect) x output side), far from the gigabytes of the unbounded case."""
    w, h = shape
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    tracemalloc.start()
    out = P.preprocess_bytes(buf.getvalue(), CLIP, Limits(), mode)  # type: ignore[arg-type]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (3, 384, 384) and out.dtype == np.uint8
    decoded, intermediate, resized = w * h * 4, 440 * max(w, h) * 4, 440 * 440 * (max(w, h) / min(w, h)) * 4
    assert peak < 2 * (decoded + intermediate + resized) + 16 * 2**20


def test_arrays_and_pil_images_meet_the_same_bound() -> None:
    with pytest.raises(P.ExtremeAspectRatioError):
        P.preprocess(np.zeros((1, 5000, 3), np.uint8), CLIP)
    with pytest.raises(P.ExtremeAspectRatioError):
        P.preprocess(Image.new("RGB", (20_000, 3)), CLIP)
    for empty in (np.zeros((0, 0, 3), np.uint8), Image.new("RGB", (0, 0))):
        with pytest.raises(P.InvalidImageError, match="no pixels"):
            P.preprocess(empty, CLIP)


def test_the_configured_pixel_limit_is_quoted_and_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    data = png(400, 300)  # 120,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow's guard, far below ours
    with pytest.raises(P.TooManyPixelsError, match=r"the configured limit is 1000000\)"):
        P.preprocess_bytes(data, FIXED, Limits(max_pixels=1_000_000))
    P.use_configured_limits_only()  # what the server's preprocess process does
    assert P.preprocess_bytes(data, FIXED, Limits(max_pixels=1_000_000)).shape == (3, 384, 384)
    with pytest.raises(P.TooManyPixelsError, match=r"400x300 = 120000 pixels, above the limit of 100000"):
        P.preprocess_bytes(data, FIXED, Limits(max_pixels=100_000))


def test_draft_mode_refuses_corrupt_metadata_as_invalid_input() -> None:
    buf = io.BytesIO()
    img = Image.new("RGB", (800, 600), (10, 200, 30))
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    start = data.find(b"Exif\x00\x00")
    assert start > 0
    data[start + 6 : start + 40] = b"\xff" * 34  # a broken TIFF header inside the EXIF block
    for mode in RESIZE_MODES:
        try:
            out = P.preprocess_bytes(bytes(data), CLIP, mode=mode)  # type: ignore[arg-type]
        except P.InvalidImageError:
            continue
        assert out.shape == (3, 384, 384)  # a mode may ignore the broken block; none may fail otherwise


def test_a_pipe_named_like_an_image_is_refused_without_blocking(tmp_path: Path) -> None:
    # `dfserve classify pipe.jpg` used to block forever in open(), past any --timeout.
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | bytes | None] = []

    def read() -> None:
        try:
            outcome.append(P.read_image_bytes(fifo))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # release the blocked reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
        pytest.fail("reading a named pipe blocked")
    assert isinstance(outcome[0], P.InvalidImageError)
    assert "not a regular file" in str(outcome[0])


def test_a_file_above_the_byte_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    with big.open("wb") as f:
        f.truncate(2001)  # sparse: the size alone decides
    with pytest.raises(P.ImageTooLargeError, match="2001 bytes, above the limit of 2000"):
        P.read_image_bytes(big, Limits(max_file_bytes=2000))
    with pytest.raises(P.ImageTooLargeError, match="above the limit of 2000"), big.open("rb") as f:
        P.read_image_bytes(f, Limits(max_file_bytes=2000))
    assert len(P.read_image_bytes(big, Limits(max_file_bytes=2001)) or b"") == 2001

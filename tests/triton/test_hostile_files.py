"""Files built to cost the server far more than their size, or to reach decoders nobody asked for, sent to the
real tritonserver's `detector` ensemble (tests/conftest.py's tiny build): each is answered with a 400 naming the
problem, fast, and the server keeps answering ordinary photos."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from dfserve.errors import DecodeCostError, UndecodableImageError, UnsupportedFormatError
from dfserve.preprocessing import MAX_JPEG_SCANS, open_image
from tests.hostile import jpeg_with_repeated_scans

pytestmark = pytest.mark.slow


def _infer(url: str, data: bytes) -> tuple[str, float]:
    client = httpclient.InferenceServerClient(url, network_timeout=60)
    inp = httpclient.InferInput("image", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[data]], dtype=object))
    started = time.monotonic()
    try:
        client.infer("detector", [inp])
        outcome = "scored"
    except InferenceServerException as exc:
        outcome = f"{exc.status()} {exc.message()}"
    finally:
        client.close()
    return outcome, time.monotonic() - started


def _encoded(fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(out, fmt, **params)
    return out.getvalue()


def test_a_progressive_jpeg_with_1000_repeated_scans_is_answered_fast(
    triton_server: Any, sample_images: dict[str, Path]
) -> None:
    hostile = jpeg_with_repeated_scans(1000, 4000, 3000)
    outcome, took = _infer(triton_server.http_url, hostile)
    print(f"1,000 extra scans ({len(hostile)} bytes, 12 MP): {outcome[:60]} in {took:.2f}s")
    assert took < 3.0 and outcome.startswith("400") and "scans" in outcome, outcome
    ordinary = jpeg_with_repeated_scans(0, 4000, 3000)  # libjpeg's own 10-scan progressive file still scores
    assert _infer(triton_server.http_url, ordinary)[0] == "scored"
    assert _infer(triton_server.http_url, sample_images["chelsea"].read_bytes())[0] == "scored"


def test_scan_bound_leaves_room_for_real_encoders() -> None:
    open_image(jpeg_with_repeated_scans(MAX_JPEG_SCANS - 20))  # small image: up to MAX_JPEG_SCANS
    with pytest.raises(DecodeCostError, match="scans"):
        open_image(jpeg_with_repeated_scans(MAX_JPEG_SCANS))


@pytest.mark.parametrize("fmt", ["EPS", "PPM", "PCX", "JPEG2000", "SGI"])
def test_formats_outside_the_readme_are_never_decoded(triton_server: Any, fmt: str) -> None:
    data = _encoded(fmt)
    with pytest.raises(UnsupportedFormatError, match="is not accepted"):
        open_image(data)
    outcome, _ = _infer(triton_server.http_url, data)
    assert outcome.startswith("400") and "not accepted" in outcome, outcome


def test_a_jpeg_without_image_data_is_refused(triton_server: Any) -> None:
    data = _encoded("JPEG")
    headers_only = data[: data.index(b"\xff\xda")] + b"\xff\xd9"
    with pytest.raises(UndecodableImageError, match="no image data"):
        open_image(headers_only)
    outcome, _ = _infer(triton_server.http_url, headers_only)
    assert outcome.startswith("400") and "no image data" in outcome, outcome

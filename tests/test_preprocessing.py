"""dfserve's preprocessing against the Transformers image processors, on real photographs and on synthetic
images built to break resizing shortcuts (sharp edges, Nyquist stripes, extreme aspect ratios, upscaling)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfserve import preprocessing as P
from dfserve.spec.model import Limits, Preprocessing
from tests.checkpoints import processor_config

CLIP = Preprocessing.from_processor_config(processor_config("shortest_edge", 384) | {"size": {"shortest_edge": 440}})
DEIT = Preprocessing(resize="fixed", size=(256, 256), crop=(224, 224), resample=3)


def _sharp(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    for _ in range(30):
        x, y = rng.integers(0, w), rng.integers(0, h)
        arr[y : y + rng.integers(1, 200), x : x + rng.integers(1, 200)] = rng.integers(0, 256, 3)
    arr[::2, ::3] = 255 - arr[::2, ::3]  # stripes at the Nyquist limit: any change of pass order shows
    return Image.fromarray(arr)


def test_installed_pillow_pass_order_is_known() -> None:
    """Otherwise `box` silently degrades to exact resizing (correct, but slower)."""
    assert P._PASS_ORDER is not None


@pytest.mark.parametrize("pp", [CLIP, DEIT], ids=["shortest_edge", "fixed_crop"])
@pytest.mark.parametrize("resample", [2, 3])
def test_box_mode_is_within_one_grey_level_of_exact(pp: Preprocessing, resample: int) -> None:
    pp = pp.model_copy(update={"resample": resample})
    sizes = [(1957, 413), (100, 1000), (1000, 100), (217, 221), (1600, 1200), (1200, 1600), (60, 1500), (5, 7)]
    rng = np.random.default_rng(1)
    sizes += [(int(rng.integers(20, 1800)), int(rng.integers(20, 1800))) for _ in range(12)]
    for i, (w, h) in enumerate(sizes):
        img = _sharp(w, h, i)
        box = P.resize_and_crop(img, pp, "box").astype(int)
        exact = P.resize_and_crop(img, pp, "exact").astype(int)
        assert box.shape == exact.shape == (3, *pp.output_hw)
        assert np.abs(box - exact).max() <= 1, (w, h)


@pytest.mark.parametrize("kind", ["clip", "vit"])
def test_exact_mode_is_pixel_identical_to_the_transformers_processor(kind: str, tmp_path: Path) -> None:
    from skimage import data
    from transformers import CLIPImageProcessor, ViTImageProcessor
    from transformers.image_utils import load_image

    cfg = processor_config("shortest_edge" if kind == "clip" else "fixed", 224)
    pp = Preprocessing.from_processor_config(cfg)
    cls = CLIPImageProcessor if kind == "clip" else ViTImageProcessor
    proc = cls(**{k: v for k, v in cfg.items() if k != "image_processor_type"})
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(path, quality=90)
        ref = proc(load_image(str(path)), do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
        ours = P.preprocess(path, pp, mode="exact")
        np.testing.assert_array_equal(ours, np.rint(ref).astype(np.uint8))
        assert np.abs(P.preprocess(path, pp, mode="box").astype(int) - ours.astype(int)).max() <= 1


def test_every_input_type_gives_the_same_pixels(tmp_path: Path) -> None:
    img = _sharp(300, 200, 0)
    path = tmp_path / "x.png"
    img.save(path)
    data = path.read_bytes()
    expected = P.preprocess(data, CLIP)
    for item in (path, str(path), io.BytesIO(data), img, np.asarray(img)):
        np.testing.assert_array_equal(P.preprocess(item, CLIP), expected)  # type: ignore[arg-type]


def test_exif_orientation_is_applied() -> None:
    img = _sharp(320, 200, 3)
    exif = img.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif.tobytes())
    upright = P.preprocess(img.transpose(Image.Transpose.ROTATE_270), DEIT, mode="exact")
    np.testing.assert_array_equal(P.preprocess(buf.getvalue(), DEIT, mode="exact"), upright)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", P.EmptyImageError, "0 bytes"),
        (b"plain text, no image", P.UndecodableImageError, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, P.UndecodableImageError, "not an image"),
    ],
)
def test_bad_bytes_name_the_problem(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        P.preprocess_bytes(data, CLIP)


def test_limits_are_checked_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("1", (4000, 3000)).save(buf, "PNG")
    with pytest.raises(P.TooManyPixelsError, match=r"12000000 pixels.*before decoding"):
        P.preprocess_bytes(buf.getvalue(), CLIP, Limits(max_pixels=10_000_000))
    with pytest.raises(P.ImageTooLargeError, match="above the limit"):
        P.preprocess_bytes(buf.getvalue(), CLIP, Limits(max_file_bytes=100))


def test_truncated_jpeg_is_refused() -> None:
    buf = io.BytesIO()
    _sharp(400, 300, 2).save(buf, "JPEG", quality=90)
    with pytest.raises(P.UndecodableImageError, match="truncated or corrupt"):
        P.preprocess_bytes(buf.getvalue()[: buf.tell() // 2], CLIP)


def test_array_inputs_are_validated() -> None:
    with pytest.raises(P.InvalidImageError, match="uint8"):
        P.preprocess(np.zeros((10, 10, 3), np.float32), CLIP)
    with pytest.raises(P.InvalidImageError, match="HxWx3"):
        P.preprocess(np.zeros((3, 10, 10, 2), np.uint8), CLIP)
    with pytest.raises(P.InvalidImageError, match="unsupported image input"):
        P.preprocess(12345, CLIP)  # type: ignore[arg-type]

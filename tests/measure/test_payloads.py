"""Payloads: generated images are real JPEGs at the sizes and qualities asked for; folders are read or refused
by name; pixels follow the spec."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfserve.errors import PayloadError
from dfserve.export.policy import DEFAULT_PROCESSOR_CONFIG
from dfserve.measure.payloads import (
    REALISTIC_SIZES,
    describe_generated,
    describe_images,
    encoded,
    generate_images,
    load_folder,
    load_images,
    to_pixels,
)
from dfserve.samples import photos
from dfserve.spec.model import Labels, ModelSpec, Preprocessing


def _spec() -> ModelSpec:
    return ModelSpec(
        source="test",
        labels=Labels(names=("real", "fake"), activation="sigmoid", num_logits=1),
        preprocessing=Preprocessing.from_processor_config(DEFAULT_PROCESSOR_CONFIG),
    )


def test_generated_images_are_jpegs_of_the_asked_size_and_deterministic() -> None:
    images = generate_images(3, seed=7, sizes=[(320, 240), (100, 300)], qualities=[60, 95])
    assert [(i.width, i.height, i.quality) for i in images] == [(320, 240, 60), (100, 300, 95), (320, 240, 60)]
    for img in images:
        with Image.open(io.BytesIO(img.data)) as decoded:
            assert decoded.format == "JPEG" and decoded.size == (img.width, img.height)
    assert [i.data for i in generate_images(3, seed=7, sizes=[(320, 240), (100, 300)], qualities=[60, 95])] == [
        i.data for i in images
    ]
    assert images[0].data != images[2].data  # same size and quality, different content


def test_generated_images_compress_like_photographs() -> None:
    # 1024x768 photographs at quality 90 weigh roughly 100-400 KiB: noise would be far larger, flat far smaller
    (img,) = generate_images(1, sizes=[(1024, 768)], qualities=[90])
    assert 60_000 < len(img.data) < 500_000, img.describe()


def test_default_sizes_include_a_phone_photo() -> None:
    assert max(w * h for w, h in REALISTIC_SIZES) >= 12_000_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"count": 0}, "at least 1"), ({"count": 1, "qualities": [0]}, "quality"), ({"count": 1, "sizes": []}, "size")],
)
def test_generation_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        generate_images(**kwargs)


def test_folder_is_read_sorted_and_non_images_refused_by_name(tmp_path: Path) -> None:
    for name, size in (("b.png", (40, 30)), ("a.jpg", (20, 10))):
        Image.new("RGB", size, (200, 10, 10)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    images = load_folder(tmp_path)
    assert [(i.name, i.width, i.height, i.format) for i in images] == [
        ("a.jpg", 20, 10, "JPEG"),
        ("b.png", 40, 30, "PNG"),
    ]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(PayloadError, match=r"broken\.jpg"):
        load_folder(tmp_path)


def test_missing_or_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PayloadError, match="not found"):
        load_images(tmp_path / "nope")
    with pytest.raises(PayloadError, match="no image files"):
        load_images(tmp_path)


def test_pixels_follow_the_spec(sample_images: dict[str, Path]) -> None:
    spec = _spec()
    images = load_folder(next(iter(sample_images.values())).parent)
    pixels = to_pixels(images, spec)
    assert all(p.shape == (3, *spec.input_hw) and p.dtype == np.uint8 for p in pixels)


def test_an_image_set_is_described_by_its_sizes() -> None:
    """Every throughput summary names its images: 12 MP photographs and 512x512 ones differ tenfold in images/s."""
    made = generate_images(3)
    assert describe_generated(3) == "3 generated photo-like JPEGs, 640x480 to 1024x768 (median 0.48 MP)"
    assert describe_images(made, "generated photo-like JPEGs").startswith(describe_generated(3) + ", ")
    assert describe_generated(8).endswith("640x480 to 3024x4032 (median 0.99 MP)")
    shipped = describe_images([encoded(f"{n}.jpg", d) for n, d in photos()], "sample photographs")
    assert shipped.startswith("8 sample photographs, ") and "to 512x512" in shipped and shipped.endswith(" KiB")

"""`dfserve.engine.gpu_decode` on the CPU (device `cpu`, the same code as on a GPU): which files take the device
path and which the exact CPU path, per-image errors inside one batch, limits from the header, EXIF orientation,
and pixels within a few grey levels of the exact path.

Where torchvision imports, its decoder runs; in the project's main venv (CPU torch, which PyPI's torchvision does
not load against) the Pillow stand-in does (tests/torchvision/ proves both decode identically). nvJPEG itself needs
a GPU: `dfserve bench gpu-decode` measures it there."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from dfserve.engine.gpu_decode import DeviceDecoder, _chunks, check_supported, orient
from dfserve.errors import DecodeChoiceError, TooManyPixelsError
from dfserve.export.parity import write_parity_images
from dfserve.export.policy import DEFAULT_PROCESSOR_CONFIG
from dfserve.preprocessing import preprocess_bytes
from dfserve.samples import photos
from dfserve.spec.model import Labels, Limits, Preprocessing
from tests.triton.test_serving import _bad_inputs

PP = Preprocessing.from_processor_config(DEFAULT_PROCESSOR_CONFIG)  # the default checkpoint's: 440 bicubic, 384
LABELS_ONE = Labels(names=("real", "fake"), activation="sigmoid", num_logits=1)


def _exact(data: bytes, pp: Preprocessing = PP) -> np.ndarray:
    return preprocess_bytes(data, pp, Limits(), "exact")


@pytest.fixture(scope="module")
def decoder() -> DeviceDecoder:
    return DeviceDecoder(PP, Limits(), "cpu")


def test_photographs_decode_on_the_device_path_within_a_few_grey_levels(decoder: DeviceDecoder) -> None:
    files = [data for _, data in photos()]
    out = decoder(files)
    assert out.rows == out.on_device == list(range(len(files))) and not out.errors
    assert out.pixels.dtype == torch.uint8 and tuple(out.pixels.shape) == (len(files), 3, 384, 384)
    for row, data in zip(out.pixels.numpy(), files, strict=True):
        diff = np.abs(row.astype(int) - _exact(data).astype(int))
        # resize arithmetic only here (PyTorch's antialiased bicubic against Pillow's): measured max 7, mean < 0.21
        assert diff.max() <= 12 and diff.mean() < 0.5


def test_formats_the_device_does_not_take_fall_back_to_the_exact_path(tmp_path: Path, decoder: DeviceDecoder) -> None:
    paths = {p.name: p for p in write_parity_images(tmp_path, photos=0)}
    fallback = [n for n in paths if not n.endswith(".jpg") or n.startswith("cmyk")]
    assert {"cmyk_240x180.jpg", "webp_333x222.webp", "bmp_129x97.bmp", "tiff_145x203.tiff"} <= set(fallback)
    assert any(n.endswith(".gif") for n in fallback) and any(n.endswith(".png") for n in fallback)
    files = [paths[n].read_bytes() for n in fallback]
    out = decoder(files)
    assert not out.errors and out.on_device == [] and out.rows == list(range(len(files)))
    for row, data in zip(out.pixels.numpy(), files, strict=True):
        np.testing.assert_array_equal(row, _exact(data))  # the exact path, bit for bit


def test_bad_files_fail_alone_in_a_batch_with_good_ones(decoder: DeviceDecoder) -> None:
    good = [data for _, data in photos(3)]
    bad = _bad_inputs()
    files = [good[0], *(d for d, _ in bad.values()), good[1], good[2]]
    out = decoder(files)
    assert out.rows == [0, len(files) - 2, len(files) - 1]
    assert sorted(out.errors) == list(range(1, len(bad) + 1))
    for i, (_, message) in enumerate(bad.values(), start=1):
        assert message in str(out.errors[i])
    for row, data in zip(out.pixels.numpy(), [good[0], good[1], good[2]], strict=True):
        assert np.abs(row.astype(int) - _exact(data).astype(int)).max() <= 12


def test_a_truncated_jpeg_is_refused_not_decoded_with_grey_rows(decoder: DeviceDecoder) -> None:
    data = photos(2)[1][1]
    out = decoder([data[: len(data) * 7 // 10], data])
    assert out.rows == [1] and out.on_device == [1]
    assert "truncated" in str(out.errors[0])


def test_a_batch_the_decoder_refuses_is_decoded_one_by_one(decoder: DeviceDecoder) -> None:
    """The real decoder, fed a corrupt JPEG between two good ones: the good ones still decode."""
    good = photos(1)[0][1]
    corrupt = _bad_inputs()["corrupt"][0]
    decoded = decoder._decode_chunk([good, corrupt, good])
    assert decoded[1] is None
    assert decoded[0] is not None and decoded[2] is not None and torch.equal(decoded[0], decoded[2])


def test_pixel_limits_are_checked_from_the_header_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("L", (4000, 3000)).save(buf, "JPEG")
    small = DeviceDecoder(PP, Limits(max_pixels=10_000_000), "cpu")
    out = small([buf.getvalue(), photos(1)[0][1]])
    assert isinstance(out.errors[0], TooManyPixelsError) and "before decoding" in str(out.errors[0])
    assert out.rows == [1] and out.on_device == [1]


def test_grey_and_exif_rotated_jpegs_decode_on_the_device(tmp_path: Path, decoder: DeviceDecoder) -> None:
    rgb = np.asarray(Image.open(io.BytesIO(photos(1)[0][1])).convert("RGB").resize((600, 400)))
    grey = io.BytesIO()
    Image.fromarray(rgb).convert("L").save(grey, "JPEG", quality=95)
    rotated = io.BytesIO()
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(rotated, "JPEG", quality=95, exif=exif.tobytes())
    files = [grey.getvalue(), rotated.getvalue()]
    out = decoder(files)
    assert out.on_device == [0, 1]
    for row, data in zip(out.pixels.numpy(), files, strict=True):
        assert np.abs(row.astype(int) - _exact(data).astype(int)).mean() < 1.0  # a wrong rotation would be ~50


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillows_exif_transpose(orientation: int) -> None:
    arr = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(img)).transpose(2, 0, 1)
    got = orient(torch.from_numpy(arr.transpose(2, 0, 1).copy()), orientation).numpy()
    np.testing.assert_array_equal(got, expected)


def test_filters_without_a_device_counterpart_are_refused_in_one_line() -> None:
    lanczos = PP.model_copy(update={"resample": 1})
    with pytest.raises(DecodeChoiceError, match="lanczos: build with --decode cpu"):
        check_supported(lanczos)
    with pytest.raises(DecodeChoiceError):
        DeviceDecoder(lanczos, Limits())


def test_device_batches_are_chunked_by_pixels() -> None:
    jobs = [(i, b"", 0, px) for i, px in enumerate([60, 60, 60, 200, 10])]
    assert [[j[0] for j in g] for g in _chunks(jobs, 128)] == [[0, 1], [2], [3], [4]]


def test_a_spec_written_before_format_1_3_reads_as_cpu_decoding() -> None:
    import json

    from dfserve.spec.model import ModelSpec

    spec = ModelSpec(source="x", labels=LABELS_ONE, preprocessing=PP)
    data = json.loads(spec.to_json())
    data["format_version"] = "1.2"
    del data["decode"]
    del data["batching"]["preprocess_threads"]
    old = ModelSpec.from_json(json.dumps(data))
    assert old.decode == "cpu" and old.batching.preprocess_threads == 0

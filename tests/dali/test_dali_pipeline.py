"""The DALI pipeline of `dfserve.repository.dali` run on the CPU (`device="cpu"`, the same graph as the `mixed`
GPU one but for the decoder's placement): its pixels against the exact path, EXIF orientation, and per-image
error isolation. DALI's wheel (nvidia-dali-cuda120, ~424 MB) is not in the project's environment; these tests
run where it is installed (e.g. a separate venv with DALI, numpy, Pillow, pydantic and pytest) and are skipped,
saying so, where it is not."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dfserve.export.policy import DEFAULT_PROCESSOR_CONFIG
from dfserve.preprocessing import preprocess_bytes
from dfserve.samples import photos
from dfserve.spec.model import Labels, Limits, ModelSpec, Preprocessing

try:
    import nvidia.dali as dali

    from dfserve.repository.dali import build_pipeline, run_isolated, serialize
except ImportError:  # the file is still collected, so a full run sees each test skipped with the reason
    dali = None
pytestmark = pytest.mark.skipif(dali is None, reason="DALI (nvidia-dali-cuda120) is not installed here: make test-dali")

LABELS = Labels(names=("real", "fake"), activation="sigmoid", num_logits=1)


def _spec(pp: Preprocessing) -> ModelSpec:
    return ModelSpec(source="test", labels=LABELS, preprocessing=pp)


def _maker(spec: ModelSpec, batch: int = 8) -> Any:
    def make() -> Any:
        pipe = build_pipeline(spec, batch_size=batch, device="cpu", num_threads=2)
        pipe.build()
        return pipe

    return make


@pytest.mark.parametrize(
    "pp",
    [
        Preprocessing.from_processor_config(DEFAULT_PROCESSOR_CONFIG),
        Preprocessing(resize="fixed", size=(224, 224), resample=2),
    ],
    ids=["shortest_edge_bicubic_crop", "fixed_bilinear"],
)
def test_pixels_are_within_a_few_grey_levels_of_the_exact_path(pp: Preprocessing) -> None:
    files = [data for _, data in photos()]
    out = run_isolated(_maker(_spec(pp)), files, "image")
    for data, pixels in zip(files, out, strict=True):
        assert isinstance(pixels, np.ndarray) and pixels.shape == (3, *pp.output_hw)
        diff = np.abs(pixels.astype(int) - preprocess_bytes(data, pp, Limits(), "exact").astype(int))
        assert diff.max() <= 12 and diff.mean() < 0.5


def test_exif_orientation_is_applied() -> None:
    pp = Preprocessing.from_processor_config(DEFAULT_PROCESSOR_CONFIG)
    img = Image.open(io.BytesIO(photos(1)[0][1])).convert("RGB").resize((600, 400))
    exif = img.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    (pixels,) = run_isolated(_maker(_spec(pp)), [buf.getvalue()], "image")
    assert isinstance(pixels, np.ndarray)
    assert np.abs(pixels.astype(int) - preprocess_bytes(buf.getvalue(), pp).astype(int)).mean() < 1.0


def test_one_bad_file_fails_alone_and_the_batch_is_answered() -> None:
    pp = Preprocessing.from_processor_config(DEFAULT_PROCESSOR_CONFIG)
    files = [data for _, data in photos(4)]
    out = run_isolated(_maker(_spec(pp)), [files[0], b"%PDF-1.4 not a picture", *files[1:]], "image")
    assert isinstance(out[1], Exception)
    assert all(isinstance(o, np.ndarray) for i, o in enumerate(out) if i != 1)


def test_the_pipeline_serialises_and_runs_back(tmp_path: Path) -> None:
    """The CPU variant here (DALI serialises a `mixed` pipeline only where CUDA initialises): written, read back
    with DALI's own deserialiser, and run, it gives the same pixels as the pipeline it came from."""
    from nvidia.dali import Pipeline

    pp = Preprocessing.from_processor_config(DEFAULT_PROCESSOR_CONFIG)
    path = serialize(_spec(pp), tmp_path / "model.dali", batch_size=8, device="cpu")
    files = [data for _, data in photos(2)]

    def read_back() -> Any:
        pipe = Pipeline.deserialize(filename=str(path))
        pipe.build()
        return pipe

    np.testing.assert_array_equal(
        np.stack(run_isolated(read_back, files, "image")), np.stack(run_isolated(_maker(_spec(pp)), files, "image"))
    )

"""The photographs that ship in the package: each decodes, and each has its source and licence written down."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from dfserve.samples import photo_bytes, photos
from dfserve.spec.names import SAMPLE_PHOTOS

LICENSES = Path(__file__).resolve().parents[1] / "src" / "dfserve" / "photos" / "LICENSES.md"


def test_every_photo_decodes_and_is_listed_with_its_licence() -> None:
    text = LICENSES.read_text()
    assert [name for name, _ in photos()] == list(SAMPLE_PHOTOS)
    for name, data in photos():
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "JPEG" and min(img.size) >= 256
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}.jpg`"))
        assert any(word in row for word in ("CC0", "public domain", "no known copyright"))


def test_unknown_photo_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="no sample photograph 'lena'"):
        photo_bytes("lena")

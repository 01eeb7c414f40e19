"""Real photographs shipped with the package (src/dfserve/photos/, licences in LICENSES.md there).

The build's parity proof, `dfserve verify`, the demo and the benchmarks all need real photographs, and a clean
`pip install 'dfserve[build]'` has no dev-only package (scikit-image) to take them from.
"""

from __future__ import annotations

from importlib import resources

from dfserve.spec.names import SAMPLE_PHOTOS


def photo_bytes(name: str) -> bytes:
    """The JPEG file of one sample photograph (a name from `dfserve.spec.names.SAMPLE_PHOTOS`)."""
    if name not in SAMPLE_PHOTOS:
        raise KeyError(f"no sample photograph {name!r}; known: {', '.join(SAMPLE_PHOTOS)}")
    return resources.files("dfserve").joinpath("photos", f"{name}.jpg").read_bytes()


def photos(count: int | None = None) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes) of the first `count` sample photographs (all by default), in a fixed order."""
    return [(name, photo_bytes(name)) for name in SAMPLE_PHOTOS[:count]]

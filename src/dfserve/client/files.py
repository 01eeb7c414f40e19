"""Finding the images a command was pointed at."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dfserve.names import IMAGE_SUFFIXES


def find_images(paths: Iterable[str | Path]) -> list[str]:
    """Files as given, and image files found recursively (sorted) in folders, as strings. A file named
    explicitly is always tried, whatever its suffix.

    A path that does not exist is kept as given, so that it reports "no such file" in place like any other
    bad input instead of silently disappearing.
    """
    found: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                str(p)
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
        else:
            found.append(str(raw))
    return found

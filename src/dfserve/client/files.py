"""Finding the images a command was pointed at."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dfserve.spec.names import IMAGE_SUFFIXES


def find_images(paths: Iterable[str | Path]) -> list[str]:
    """Files as given, and image files found recursively (sorted) in folders, as strings. A file named
    explicitly is always tried, whatever its suffix.

    A path that does not exist is kept as given, and so is an image-named link in a folder that cannot be
    followed (a loop, a dangling link), so that each reports its error in place like any other bad input
    instead of silently disappearing.
    """
    found: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                str(p)
                for p in sorted(path.rglob("*"))
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and _worth_trying(p)
            )
        else:
            found.append(str(raw))
    return found


def _worth_trying(path: Path) -> bool:
    """Regular files, and links that lead nowhere (a loop, a dangling link) so that they report in place:
    `is_file()` alone dropped those silently. Folders, pipes and devices are skipped (reading a pipe blocks)."""
    return path.is_file() or (path.is_symlink() and not path.exists())

"""Which files a command pointed at a folder tries: every image-named entry that is not a folder."""

from __future__ import annotations

import os
from pathlib import Path

from dfserve.client.files import find_images


def test_unreadable_image_links_in_a_folder_are_kept_so_they_report_in_place(tmp_path: Path) -> None:
    # A symlink loop or a dangling link named like an image is something the user will want to hear about:
    # it used to vanish from the listing, and the summary counted one image fewer without a word.
    (tmp_path / "good.jpg").write_bytes(b"x")
    os.symlink("loop_b.jpg", tmp_path / "loop_a.jpg")
    os.symlink("loop_a.jpg", tmp_path / "loop_b.jpg")
    os.symlink("gone.png", tmp_path / "dangling.png")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "folder.jpg" / "inner.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.jpg")  # reading it would block: never tried from a folder

    found = find_images([tmp_path])

    assert found == [
        str(tmp_path / name)
        for name in ("dangling.png", "folder.jpg/inner.png", "good.jpg", "loop_a.jpg", "loop_b.jpg")
    ]


def test_a_file_named_explicitly_is_tried_whatever_it_is(tmp_path: Path) -> None:
    os.symlink("missing", tmp_path / "link")
    assert find_images([tmp_path / "link", "nope.txt"]) == [str(tmp_path / "link"), "nope.txt"]

"""What `dfserve score` finds and reads: real folders, manifests, fsspec's in-memory filesystem, odd files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import fsspec
import pytest

from dfserve.score.sources import ReadError, Source, SourceError, read_bytes
from dfserve.spec.model import Limits


def test_a_folder_is_walked_recursively_sorted_skipping_hidden_and_other_files(tmp_path: Path) -> None:
    for name in ("b/2.JPG", "b/1.png", "a.webp", "a/z/3.jpeg", ".hidden/4.jpg", "b/.5.jpg", "notes.txt", "c/6.gif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    source = Source.open(str(tmp_path))
    assert source.kind == "folder"
    found = [os.path.relpath(p, tmp_path) for p in source.inputs()]
    assert found == ["a.webp", "a/z/3.jpeg", "b/1.png", "b/2.JPG", "c/6.gif"]
    assert all(p.startswith(str(tmp_path)) for p in source.inputs())  # as found: SOURCE joined with the place


def test_a_manifest_lists_paths_and_urls_relative_to_its_folder(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "list.txt"
    manifest.write_text("# images\nimgs/a.jpg\n\n  /abs/b.png  \ns3://bucket/c.jpg\nimgs/a.jpg\n")
    source = Source.open(str(manifest))
    assert source.kind == "manifest"
    keys = list(source.inputs())
    assert keys == ["imgs/a.jpg", "/abs/b.png", "s3://bucket/c.jpg", "imgs/a.jpg"]  # the store drops the repeat
    assert source.resolve("imgs/a.jpg") == str(tmp_path / "m" / "imgs" / "a.jpg")
    assert source.resolve("/abs/b.png") == "/abs/b.png" and source.resolve("s3://bucket/c.jpg") == "s3://bucket/c.jpg"


def test_fsspec_urls_are_walked_and_read() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe({"/score-test/x/1.jpg": b"one", "/score-test/x/y/2.png": b"two", "/score-test/x/skip.txt": b"-"})
    source = Source.open("memory://score-test/x")
    assert source.kind == "folder"
    keys = list(source.inputs())
    assert [k.rsplit("/", 1)[1] for k in keys] == ["1.jpg", "2.png"]
    assert all(k.startswith("memory://") for k in keys)
    assert [read_bytes(k, Limits()) for k in keys] == [b"one", b"two"]
    fs.pipe({"/score-test/list.txt": b"memory://score-test/x/1.jpg\n"})
    assert Source.open("memory://score-test/list.txt").kind == "manifest"
    with pytest.raises(ReadError, match="no such file"):
        read_bytes("memory://score-test/x/missing.jpg", Limits())


def test_unreadable_inputs_say_why(tmp_path: Path) -> None:
    limits = Limits(max_file_bytes=10)
    (tmp_path / "big.jpg").write_bytes(b"x" * 11)
    (tmp_path / "dir.jpg").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ReadError, match="11 bytes, above the limit of 10"):
        read_bytes(str(tmp_path / "big.jpg"), limits)
    for name in ("dir.jpg", "pipe.jpg"):
        with pytest.raises(ReadError, match="not a regular file"):
            read_bytes(str(tmp_path / name), limits)
    with pytest.raises(ReadError, match="no such file"):
        read_bytes(str(tmp_path / "gone.jpg"), limits)


def test_a_missing_source_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such folder or manifest"):
        Source.open(str(tmp_path / "nothing"))
    with pytest.raises(SourceError, match="no filesystem for this URL"):
        Source.open("nosuchscheme://bucket/x")


def test_without_the_extra_the_command_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SDK-only install: one line naming `dfserve[score]`, before contacting any server."""
    from dfserve.cli import main

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["score", str(tmp_path), "--out", str(tmp_path / "r.parquet"), "--url", "localhost:1"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'dfserve[score]'" in err and "Traceback" not in err
    assert not (tmp_path / "r.parquet.parts").exists()

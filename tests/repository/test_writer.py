"""The repository writer replaces only what a build wrote, and the server refuses half-written repositories and
repositories of another dfserve version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dfserve import __version__
from dfserve.errors import OutputError, ServerStartError
from dfserve.repository.staging import BuildLock
from dfserve.repository.writer import write_repository
from dfserve.spec.model import Labels, ModelSpec, Preprocessing
from dfserve.spec.names import BUILD_MARKER_FILENAME
from dfserve.triton.process import TritonServer


def spec() -> ModelSpec:
    return ModelSpec(
        source="local",
        labels=Labels(names=("real", "fake"), activation="sigmoid", num_logits=1),
        preprocessing=Preprocessing(resize="fixed", size=(32, 32)),
    )


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    path = tmp_path / "graph.onnx"
    path.write_bytes(b"stand-in for the graph: the writer only copies it")
    return path


def test_a_build_rewrites_its_own_repository(tmp_path: Path, graph: Path) -> None:
    out = tmp_path / "repo"
    write_repository(spec(), out, onnx_path=graph)
    (out / "vit" / "1" / "stale.txt").write_text("left by an older build")
    write_repository(spec(), out, onnx_path=graph)
    assert not (out / "vit" / "1" / "stale.txt").exists()
    assert (out / "detector" / "labels.txt").read_text() == "real\nfake\n"


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda d: (d / "notes.txt").write_text("mine"), "holds no config.pbtxt written by dfserve build"),
        (lambda d: (d / "config.pbtxt").write_text('name: "detector"\n'), "holds no config.pbtxt written by dfserve"),
    ],
)
def test_a_folder_the_build_did_not_write_is_never_deleted(
    tmp_path: Path, graph: Path, setup: object, reason: str
) -> None:
    out = tmp_path / "repo"
    foreign = out / "detector"
    foreign.mkdir(parents=True)
    setup(foreign)  # type: ignore[operator]
    before = sorted(p.name for p in foreign.iterdir())
    with pytest.raises(OutputError, match=reason):
        write_repository(spec(), out, onnx_path=graph)
    assert sorted(p.name for p in foreign.iterdir()) == before
    assert not (out / "vit").exists()  # refused before touching anything


def test_a_built_folder_with_foreign_files_is_kept(tmp_path: Path, graph: Path) -> None:
    out = tmp_path / "repo"
    write_repository(spec(), out, onnx_path=graph)
    (out / "preprocess" / "my-notes.md").write_text("do not delete")
    with pytest.raises(OutputError, match=r"files a build does not write: my-notes\.md"):
        write_repository(spec(), out, onnx_path=graph)
    assert (out / "preprocess" / "my-notes.md").exists()


def test_server_refuses_a_repository_being_built(tmp_path: Path, graph: Path) -> None:
    """Refused while a build holds the folder's lock; a dead build's marker alone does not block serving (builds
    are staged: the folder holds the old repository)."""
    out = write_repository(spec(), tmp_path / "repo", onnx_path=graph)
    (out / BUILD_MARKER_FILENAME).write_text("123\n")
    with (
        BuildLock(out),
        pytest.raises(ServerStartError, match=rf"being written by a dfserve build \(pid {os.getpid()}\)"),
    ):
        TritonServer(out, http_port=0).start()
    TritonServer(out, http_port=0)._check_repository()


def test_server_refuses_a_repository_of_another_dfserve(tmp_path: Path, graph: Path) -> None:
    other = spec().model_copy(update={"dfserve_version": "0.0.1"})
    out = write_repository(other, tmp_path / "repo", onnx_path=graph)
    with pytest.raises(ServerStartError, match=rf"built by dfserve 0\.0\.1, but dfserve {__version__} is installed"):
        TritonServer(out, http_port=0).start()

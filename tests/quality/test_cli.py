"""`dfserve classify` and `dfserve eval` through `dfserve.cli.main`, against the real server."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps

from dfserve.cli import main
from dfserve.triton.distribution import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photo_tree(sample_images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """real/ and fake/ sub-folders (some nested) holding 24 variants of the four photographs."""
    root = tmp_path_factory.mktemp("labelled")
    for index, (name, path) in enumerate(sample_images.items()):
        folder = root / ("real" if index < 2 else "fake") / ("nested" if index % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            variants = [rgb, ImageOps.mirror(rgb), ImageOps.flip(rgb), rgb.rotate(90, expand=True)]
            variants += [
                rgb.crop((0, 0, rgb.width // 2, rgb.height // 2)),
                rgb.resize((rgb.width // 3, rgb.height // 3)),
            ]
            for k, variant in enumerate(variants):
                variant.save(folder / f"{name}_{k}.{'png' if k % 2 else 'jpg'}")
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_json_lines_for_files_and_folders(
    triton_server: Any, photo_tree: Path, sample_images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    given = str(sample_images["chelsea"])
    code, out, _ = run(capsys, "classify", given, str(photo_tree), "--url", triton_server.http_url, "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 25 and records[0]["path"] == given  # as given first, then found (sorted)
    assert {r["path"] for r in records[1:]} == {str(p) for p in photo_tree.rglob("*.*")}
    for r in records:
        assert set(r) == {"path", "label", "score", "positive_score", "scores", "error"}
        assert r["error"] is None and r["label"] in r["scores"] and r["score"] == max(r["scores"].values())
        assert r["positive_score"] == r["scores"]["fake"]


def test_classify_csv_over_grpc_with_a_bad_file_exits_non_zero(
    triton_server: Any, sample_images: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    argv = ["classify", str(sample_images["coffee"]), str(bad), str(tmp_path / "missing.png")]
    code, out, err = run(
        capsys, *argv, "--url", triton_server.grpc_url, "--protocol", "grpc", "--csv", "--mode", "pixels"
    )
    assert code == 1 and "2 of 3 images failed" in err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in rows] == argv[1:]
    assert rows[0]["label"] in ("real", "fake") and rows[0]["error"] == ""
    assert float(rows[0]["score_real"]) + float(rows[0]["score_fake"]) == pytest.approx(1.0, abs=1e-5)
    assert "not an image" in rows[1]["error"] or "corrupt" in rows[1]["error"]
    assert "no such file" in rows[2]["error"]


def test_classify_table(triton_server: Any, sample_images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "classify", *map(str, sample_images.values()), "--url", f"grpc://{triton_server.grpc_url}"
    )
    assert code == 0
    assert all(p.name in out for p in sample_images.values()) and "label" in out and "P(fake)" in out


def test_unreachable_server_is_one_line(sample_images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url = f"127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "classify", str(sample_images["coffee"]), "--url", url, "--timeout", "2")
    assert code == 1 and out == ""
    assert "no dfserve server at" in err and url in err and "`dfserve serve" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_eval_prints_and_writes_the_report(
    triton_server: Any, photo_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "report"
    code, out, _ = run(capsys, "eval", str(photo_tree), "--url", triton_server.http_url, "--out", str(out_dir))
    assert code == 0
    for word in ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "confusion matrix",
                 "threshold sweep"):  # fmt: skip
        assert word in out
    report = json.loads((out_dir / "eval.json").read_text())
    assert report["n_images"] == 24 and report["counts"] == {"real": 12, "fake": 12}
    assert report["positive_label"] == "fake" and len(report["threshold_sweep"]) == 19
    assert sum(map(sum, report["confusion_matrix"])) == 24
    with Image.open(out_dir / "eval.png") as img:
        assert img.format == "PNG"


def test_eval_refuses_folders_that_are_not_labels(
    triton_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dogs").mkdir()
    code, _, err = run(capsys, "eval", str(tmp_path), "--url", triton_server.http_url)
    assert code == 1 and "dogs" in err and "not labels of the served model" in err


def test_classify_prints_paths_with_markup_verbatim(
    triton_server: Any, sample_images: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file name is data, never console markup: `a[/bold]b.jpg` once crashed the table (issue 11)."""
    good = tmp_path / "a[" / "bold]b[red].jpg"  # the path reads .../a[/bold]b[red].jpg
    good.parent.mkdir()
    good.write_bytes(next(iter(sample_images.values())).read_bytes())
    bad = tmp_path / "x[" / "]y.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image [/red]")
    code, out, _ = run(capsys, "classify", "--url", triton_server.http_url, str(good), str(bad))
    assert code == 1
    assert "a[/bold]b[red].jpg" in out.replace("\n", "") and "x[/]y.jpg" in out.replace("\n", "")


def test_classify_into_a_closed_pipe_exits_quietly(triton_server: Any, sample_images: dict[str, Path]) -> None:
    """`dfserve classify ... --json | head -1`: no BrokenPipeError traceback."""
    import subprocess
    import sys

    paths = [str(p) for p in sample_images.values()] * 10
    command = [sys.executable, "-m", "dfserve.cli", "classify", "--url", triton_server.http_url, "--json", *paths]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # what `head -1` does after its line
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert first.startswith(b"{")
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 0


def test_classify_json_into_a_closed_pipe_exits_quietly(triton_server: Any, photo_tree: Path) -> None:
    """`dfserve classify ... --json | head -3`: three lines, no BrokenPipeError traceback. The folder is named 30
    times (720 lines, well over a pipe's 64 KiB buffer), so the writes after `head` exits do meet a closed pipe."""
    import os
    import subprocess
    import sys

    folders = " ".join([str(photo_tree)] * 30)
    script = (
        f"{sys.executable} -m dfserve.cli classify --url {triton_server.http_url} --json {folders} | head -3; "
        "echo status=${PIPESTATUS[0]} >&2"
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, env={**os.environ})
    assert len(result.stdout.splitlines()) == 3
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert "status=0" in result.stderr


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["classify", "--help"])
    out = capsys.readouterr().out
    assert "(default: 8)" in out and "(default: file)" in out

"""`dfserve score` as a user runs it, against a real tritonserver: a folder of several hundred real image files
in nested folders, with exact duplicates under other names and broken files, killed with -9 twice and run again;
every file exactly once, the good ones equal to the Transformers pipeline within 1e-4, the bad ones error rows;
then the same inputs as a manifest through `--ray` on a local Ray give the same rows and scores.

The served checkpoint has a sensitive head (`head_scale`), so its scores spread over (0, 1) and a pixel of
preprocessing drift would show.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dfserve.spec.model import ModelSpec
from tests.checkpoints import make_checkpoint
from tests.conftest import TEST_BATCHING

pytestmark = pytest.mark.slow

GOOD_IMAGES = 360
DUPLICATES = 4
BROKEN = {
    "broken/truncated.jpg": "truncated or corrupt",
    "broken/text.png": "not an image",
    "broken/empty.jpg": "empty image",
    "broken/deep/er/zero.webp": "empty image",
}


@pytest.fixture(scope="module")
def sensitive_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """A real build of a checkpoint whose head spreads the scores, served by a real tritonserver."""
    from dfserve.export.pipeline import BuildOptions, build
    from dfserve.triton.process import TritonServer

    root = tmp_path_factory.mktemp("score-model")
    folder = make_checkpoint(root / "ck", labels="one", policy="shortest_edge", head_scale=20.0)
    build(BuildOptions(out=root / "repo", model=str(folder), batching=TEST_BATCHING, parity_photos=1))
    with TritonServer(root / "repo", http_port=0, grpc_port=0, metrics_port=0) as server:
        yield folder, server


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small real JPEG/PNG files (RGB, grey, RGBA; several sizes) in nested folders, copies of some under other
    names, and broken files with image names."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    for i in range(GOOD_IMAGES):
        folder = root / f"set{i % 4}" / f"batch{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = 40 + (i * 7) % 50, 40 + (i * 13) % 60
        base = np.linspace(0, 255, w, dtype=np.float64)[None, :, None] * rng.uniform(0.2, 1.0, (1, 1, 3))
        arr = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        if i % 9 == 0:
            img = img.convert("L")
        elif i % 11 == 0:
            img = img.convert("RGBA")
        img.save(folder / f"img{i:04d}.png") if i % 3 == 0 or img.mode == "RGBA" else img.save(
            folder / f"img{i:04d}.jpg", quality=85
        )
    originals = sorted(root.rglob("img*.*"))
    (root / "copies").mkdir()
    for n, original in enumerate(originals[:DUPLICATES]):
        (root / "copies" / f"copy{n}{original.suffix}").write_bytes(original.read_bytes())
    jpeg = originals[1].read_bytes()
    for name in BROKEN:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / "broken/truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "broken/text.png").write_bytes(b"this is not a picture")
    (root / "broken/empty.jpg").write_bytes(b"")
    (root / "broken/deep/er/zero.webp").write_bytes(b"")
    return root


def _all_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


def _score_command(source: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dfserve.cli", "score", str(source), "--out", str(out), "--url", url, *extra]


def _kill_after_parts(command: list[str], parts_dir: Path, at_least: int) -> None:
    """Start the command and kill -9 it as soon as `parts_dir` holds `at_least` committed parts."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while len(list(parts_dir.glob("part-*.parquet"))) < at_least:
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no part committed in 120 s"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    rows = pq.read_table(out).to_pylist()
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "a path appears twice"
    return {r["path"]: r for r in rows}


def test_killed_twice_then_finished_every_file_exactly_once_and_equal_to_transformers(
    sensitive_server: tuple[Path, Any], image_tree: Path, tmp_path: Path
) -> None:
    from dfserve.export.checkpoint import load_model, resolve
    from dfserve.export.parity import reference_scores

    folder, server = sensitive_server
    out = tmp_path / "R.parquet"
    parts = tmp_path / "R.parquet.parts"
    command = _score_command(
        image_tree, out, server.http_url, "--concurrency", "2", "--rows-per-part", "10", "--no-progress"
    )
    _kill_after_parts(command, parts, at_least=1)
    assert not out.exists()
    first = len(list(parts.glob("part-*.parquet")))
    _kill_after_parts(command, parts, at_least=first + 2)  # the second run resumes, then dies too
    assert not out.exists()
    done_before_last = sum(pq.ParquetFile(p).metadata.num_rows for p in parts.glob("part-*.parquet"))
    assert 0 < done_before_last < GOOD_IMAGES

    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # the broken files are error rows
    assert f"{done_before_last} already done" in result.stderr, result.stderr
    assert not parts.exists()

    rows = _rows(out)
    files = _all_files(image_tree)
    assert sorted(rows) == files  # every file, exactly once, nothing else
    assert len(files) == GOOD_IMAGES + DUPLICATES + len(BROKEN)
    for name, reason in BROKEN.items():
        row = rows[str(image_tree / name)]
        assert row["label"] is None and row["scores"] is None and reason in row["error"], row
    good = [p for p in files if rows[p]["error"] is None]
    assert len(good) == GOOD_IMAGES + DUPLICATES

    spec = ModelSpec.load(server.repository)
    ckpt = resolve(str(folder))
    reference = reference_scores(ckpt, load_model(ckpt), spec, [Path(p) for p in good])
    served = np.array([[dict(rows[p]["scores"])[name] for name in spec.labels.names] for p in good])
    worst = float(np.abs(served - reference).max())
    print(f"dfserve score vs Transformers pipeline over {len(good)} files: max |Δ| = {worst:.2e}")
    assert worst <= 1e-4
    logits = np.log(reference[:, 1] / reference[:, 0])
    assert float(np.ptp(logits)) > 1.0, logits  # the sensitive head really spreads the scores (x1: about 0.1)

    copies = sorted((image_tree / "copies").iterdir())
    for n, copy in enumerate(copies):  # the same bytes under another name: its own row, the same digest
        original = sorted(image_tree.rglob("img*.*"))[n]
        assert rows[str(copy)]["sha256"] == rows[str(original)]["sha256"]
        assert rows[str(copy)]["scores"] == rows[str(original)]["scores"]
    assert {r["model"] for r in rows.values()} == {"detector"} and len({r["spec_id"] for r in rows.values()}) == 1

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)  # nothing left to do
    assert again.returncode == 1 and f"{len(files)} already done" in again.stderr
    assert _rows(out) == rows


def test_ray_on_a_manifest_gives_the_same_rows(
    sensitive_server: tuple[Path, Any], image_tree: Path, tmp_path: Path
) -> None:
    """40 inputs (with a copy and broken files) as a manifest: `--ray` on a local Ray (2 CPUs) and the
    single-machine run write the same rows and scores."""
    _, server = sensitive_server
    files = _all_files(image_tree)
    chosen = [*files[:: len(files) // 34][:34], *(str(image_tree / name) for name in BROKEN), files[0]]
    chosen.append(str(sorted((image_tree / "copies").iterdir())[0]))
    manifest = tmp_path / "inputs.txt"
    manifest.write_text("\n".join(chosen) + "\n")
    expected = len(set(chosen))

    single = tmp_path / "single.parquet"
    result = subprocess.run(
        _score_command(manifest, single, server.http_url, "--no-progress"), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1, result.stderr
    on_ray = tmp_path / "ray.parquet"
    result = subprocess.run(
        _score_command(
            manifest, on_ray, server.http_url, "--ray", "--ray-cpus", "2", "--ray-actors", "2", "--batch-size", "8"
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    a, b = _rows(single), _rows(on_ray)
    assert len(a) == len(b) == expected and sorted(a) == sorted(b) == sorted(set(chosen))
    for path, row in a.items():
        other = b[path]
        assert (row["sha256"], row["label"], row["error"], row["model"], row["spec_id"]) == (
            other["sha256"],
            other["label"],
            other["error"],
            other["model"],
            other["spec_id"],
        ), path
        if row["scores"] is not None:
            x, y = dict(row["scores"]), dict(other["scores"])
            assert x.keys() == y.keys() and max(abs(x[k] - y[k]) for k in x) <= 1e-6, path


def test_a_clean_folder_exits_zero_and_another_model_is_refused(
    sensitive_server: tuple[Path, Any], image_tree: Path, tmp_path: Path
) -> None:
    from dfserve.score.store import Identity, ResultStore, Row

    _, server = sensitive_server
    clean = image_tree / "set0" / "batch0"
    out = tmp_path / "clean.parquet"
    result = subprocess.run(_score_command(clean, out, server.http_url), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(out).num_rows == len(list(clean.iterdir()))

    other = tmp_path / "other.parquet"
    with ResultStore(other, Identity("detector", "0000000000000000", "another checkpoint")) as store:
        store.add(Row("x.jpg", None, error="x"))
        store.finish()
    result = subprocess.run(_score_command(clean, other, server.http_url), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert "0000000000000000" in message and "another checkpoint" in message and "refusing to mix" in message
    served = _rows(out)[next(iter(_rows(out)))]["spec_id"]
    assert served in message  # names both
    assert pq.read_table(other).num_rows == 1  # untouched


def test_file_mode_gives_the_same_scores_and_error_rows(
    sensitive_server: tuple[Path, Any], image_tree: Path, tmp_path: Path
) -> None:
    """`--mode file` (the server decodes) and `--workers 2` (decoding in processes) against the default, on good
    and broken files."""
    _, server = sensitive_server
    chosen = [*_all_files(image_tree / "set1")[:24], *(str(image_tree / name) for name in BROKEN)]
    manifest = tmp_path / "inputs.txt"
    manifest.write_text("\n".join(chosen) + "\n")
    rows = {}
    for name, options in {"pixels": [], "file": ["--mode", "file"], "processes": ["--workers", "2"]}.items():
        out = tmp_path / f"{name}.parquet"
        command = _score_command(manifest, out, server.http_url, *options, "--no-progress")
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr
        assert out.is_file(), result.stderr  # exit 1 for the error rows, not for a run that wrote nothing
        rows[name] = _rows(out)
    assert sorted(rows["pixels"]) == sorted(rows["file"]) == sorted(chosen)
    assert rows["processes"] == rows["pixels"]  # decoding in processes changes nothing
    for path, row in rows["pixels"].items():
        other = rows["file"][path]
        assert (row["sha256"], row["label"], row["error"] is None) == (
            other["sha256"],
            other["label"],
            other["error"] is None,
        )
        if row["scores"] is not None:
            x, y = dict(row["scores"]), dict(other["scores"])
            assert max(abs(x[k] - y[k]) for k in x) <= 1e-6, path
    for name in BROKEN:
        assert rows["file"][str(image_tree / name)]["error"], name


def test_the_benchmark_prints_the_ratio_for_both_modes(
    sensitive_server: tuple[Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from dfserve.score.bench import main

    _, server = sensitive_server
    assert main(["--url", server.http_url, "--images", "24", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("24 images, concurrency 8, 1 rounds")
    assert "pixels mode: dfserve score" in out and "file mode: dfserve score" in out and "ratio median" in out


def test_a_server_lost_mid_run_stops_the_job_keeping_its_rows(
    sensitive_server: tuple[Path, Any], image_tree: Path, tmp_path: Path
) -> None:
    """Not the files' fault: no error rows, the committed parts kept, a non-zero exit naming the cause; run again
    against a server, it finishes with every file once."""
    from dfserve.triton.process import TritonServer

    _, server = sensitive_server
    folder = image_tree
    out = tmp_path / "R.parquet"
    parts = tmp_path / "R.parquet.parts"
    with TritonServer(server.repository, http_port=0, grpc_port=0, metrics_port=0) as doomed:
        options = ("--concurrency", "1", "--rows-per-part", "5", "--timeout", "5", "--no-progress")
        proc = subprocess.Popen(
            _score_command(folder, out, doomed.http_url, *options), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while not list(parts.glob("part-*.parquet")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        assert doomed.pid is not None
        os.kill(doomed.pid, signal.SIGKILL)  # gone at once, as a lost node is
        _, err = proc.communicate(timeout=120)
    message = " ".join(err.decode().split())
    assert proc.returncode == 3, message  # stopped: neither done (0) nor rows failed (1)
    assert "server unavailable" in message and "run the same command again to continue" in message, message
    assert not out.exists()
    kept = [r for part in parts.glob("part-*.parquet") for r in pq.read_table(part).to_pylist()]
    broken = {str(image_tree / name) for name in BROKEN}
    assert kept and all(r["error"] is None for r in kept if r["path"] not in broken)  # no server error as a row

    again = subprocess.run(
        _score_command(folder, out, server.http_url, "--no-progress"), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 1, again.stderr  # the broken files
    assert f"{len(kept)} already done" in again.stderr
    assert sorted(_rows(out)) == _all_files(folder)

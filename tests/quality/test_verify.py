"""`dfserve verify` against real servers: the same checkpoint passes, other weights fail with the disagreement in
the table, a stopped server is one line, bad files of --images are listed apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dfserve.triton.distribution import free_port
from tests.checkpoints import make_checkpoint

pytestmark = pytest.mark.slow


def run_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "verify", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_same_checkpoint_verifies(triton_server: Any, tiny_checkpoint: Path, tmp_path: Path, protocol: str) -> None:
    url = f"http://{triton_server.http_url}" if protocol == "http" else f"grpc://{triton_server.grpc_url}"
    report = tmp_path / "verify.json"
    result = run_verify("--url", url, "--model", str(tiny_checkpoint), "--json", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "verified" in result.stdout and "NOT verified" not in result.stdout
    data = json.loads(report.read_text())
    assert data["passed"] and data["precision"] == "fp32"
    # progress on stderr (plain lines: no terminal here), each stage to its last image; none of it on stdout
    n = data["drift"]["images"]
    err = result.stderr.splitlines()
    assert any(line.startswith(f"verify: the server: {n}/{n} images (100%)") for line in err), result.stderr
    assert any(line.startswith(f"verify: the reference pipeline: {n}/{n} images (100%)") for line in err)
    assert "verify: " not in result.stdout
    assert data["drift"]["max_abs_diff"] <= 1e-4 and data["drift"]["flips"] == 0
    assert data["drift"]["images"] >= 20  # the shipped photographs and the generated hostile images


def test_other_weights_fail_and_the_table_shows_it(triton_server: Any, tmp_path: Path) -> None:
    other = make_checkpoint(tmp_path / "other", labels="one", policy="shortest_edge", seed=7, head_scale=20.0)
    report = tmp_path / "verify.json"
    result = run_verify("--url", f"http://{triton_server.http_url}", "--model", str(other), "--json", str(report))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "NOT verified" in result.stdout and "exceeds 0.0001" in result.stdout
    data = json.loads(report.read_text())
    assert not data["passed"]
    assert max(r["abs_diff"] for r in data["images"]) > 1e-3
    assert "photo_astronaut.jpg" in result.stdout  # per-image rows


def test_bad_files_are_listed_not_counted(triton_server: Any, tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")  # unreadable: a bad file too, not a traceback
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    from dfserve.samples import photo_bytes

    (folder / "good.jpg").write_bytes(photo_bytes("coffee"))
    report = tmp_path / "verify.json"
    result = run_verify(
        "--url", triton_server.http_url, "--model", str(tiny_checkpoint), "--images", str(folder), "--json", str(report)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(report.read_text())
    bad = sorted(Path(b["image"]).name for b in data["bad_files"])
    assert bad == ["broken.jpg", "empty.png", "loop_a.jpg", "loop_b.jpg"]
    assert any(r["image"] == "good.jpg" for r in data["images"])
    assert "bad file (not compared)" in result.stdout


def test_stopped_server_is_one_line(tiny_checkpoint: Path) -> None:
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    result = run_verify("--url", url, "--model", str(tiny_checkpoint), "--timeout", "3")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unavailable" in lines[0], result.stderr


def test_pixels_mode_over_grpc_with_json_on_stdout(triton_server: Any, tiny_checkpoint: Path) -> None:
    """`--mode pixels` preprocesses here (the served spec's resize mode) and sends pixels to `vit`; `--json` alone
    replaces the table with the report on stdout, for scripts."""
    result = run_verify(
        "--url", f"grpc://{triton_server.grpc_url}", "--model", str(tiny_checkpoint), "--mode", "pixels", "--json"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["passed"] and data["url"].startswith("grpc://")
    assert data["drift"]["max_abs_diff"] <= 1e-4 and data["drift"]["flips"] == 0 and data["drift"]["images"] >= 20

"""Builds into one folder: one at a time (a lock naming the holder), staged and moved into place, so a failure
leaves the old repository, and what a killed build left is replaced by the next one. Real `dfserve build` runs on
tests/checkpoints.py's tiny checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfserve.errors import OutputError
from dfserve.repository.staging import LOCK_FILENAME, STAGING_PREFIX, BuildLock, build_holder
from dfserve.spec.model import ModelSpec
from dfserve.spec.names import BUILD_MARKER_FILENAME, REPORT_FILENAME

pytestmark = pytest.mark.slow


def _build_cmd(model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dfserve.cli", "build", "--model", str(model), "--out", str(out), "--parity-photos=2"]


def test_a_second_build_into_the_same_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    with BuildLock(out):
        assert build_holder(out) == os.getpid()
        with pytest.raises(OutputError, match=f"another dfserve build \\(pid {os.getpid()}\\) is writing"):
            BuildLock(out).__enter__()
    assert build_holder(out) is None and (out / LOCK_FILENAME).exists()


def test_two_builds_started_together_leave_a_consistent_repository(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    procs = [
        subprocess.Popen(_build_cmd(tiny_checkpoint, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [(p.wait(600), p.stdout.read() if p.stdout else "") for p in procs]
    codes = sorted(code for code, _ in outputs)
    assert codes == [0, 1], outputs
    refused = next(text for code, text in outputs if code == 1)
    assert "another dfserve build (pid" in refused and "is writing" in refused
    spec = ModelSpec.load(out)
    for name in (spec.models.engine, spec.models.preprocess, spec.models.ensemble):
        assert (out / name / "config.pbtxt").is_file()
    assert (out / REPORT_FILENAME).is_file() and not (out / BUILD_MARKER_FILENAME).exists()
    assert not list(out.glob(f"{STAGING_PREFIX}*"))


def test_a_killed_build_leaves_the_old_repository_and_the_next_replaces_its_leftover(
    built_repo: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "repo"
    shutil.copytree(built_repo, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = subprocess.Popen(_build_cmd(tiny_checkpoint, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # the staging folder is made when the build starts and filled only at its end, just before the swap: kill as
    # soon as it exists (waiting for files in it raced the swap on a quiet machine)
    while not list(out.glob(f"{STAGING_PREFIX}*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()  # mid-build, as a full disk or an OOM kill would end it
    proc.wait(30)
    assert list(out.glob(f"{STAGING_PREFIX}*")) and (out / BUILD_MARKER_FILENAME).exists()
    after = {
        p.relative_to(out): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and not str(p.relative_to(out)).startswith(".")
    }
    assert after == {k: v for k, v in before.items() if not str(k).startswith(".")}  # the old repository, untouched
    done = subprocess.run(_build_cmd(tiny_checkpoint, out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removed what a failed build left" in done.stderr + done.stdout
    assert not list(out.glob(f"{STAGING_PREFIX}*")) and not (out / BUILD_MARKER_FILENAME).exists()

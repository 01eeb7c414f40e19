"""Output for people: no wrapping when piped, progress that says how far a long stage has got, results on stdout
and diagnostics on stderr. The subprocess tests run the real `dfserve` command with its output captured (a pipe,
not a terminal), as a CI job or `| tee` sees it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.table import Table

from dfserve import terminal
from dfserve.terminal import console, heading, progress
from tests.checkpoints import make_checkpoint

LONG = "a_rather_long_folder_name_that_goes_on_" * 4


def test_a_piped_console_keeps_paths_and_table_rows_whole(capsys: pytest.CaptureFixture[str]) -> None:
    path = f"/data/{LONG}/photo.png"
    out = console()
    assert not out.is_terminal
    out.print(f"wrote {path}")
    table = Table()
    table.add_column("path")
    table.add_column("score")
    table.add_row(path, "0.9731")
    out.print(table)
    lines = capsys.readouterr().out.splitlines()
    assert f"wrote {path}" in lines
    (row,) = [line for line in lines if path in line and not line.startswith("wrote")]
    assert "0.9731" in row  # the cells of a row stay on its one line


def test_a_terminal_console_still_wraps_to_the_window() -> None:
    tty = console(file=io.StringIO(), force_terminal=True, width=40)
    tty.print("word " * 20)
    assert max(len(line) for line in tty.file.getvalue().splitlines()) <= 40  # type: ignore[attr-defined]


def test_a_piped_heading_is_one_short_line(capsys: pytest.CaptureFixture[str]) -> None:
    heading(console(), "[bold]1. build")
    assert capsys.readouterr().out == "== 1. build ==\n"


def test_plain_progress_says_done_total_and_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(terminal, "PLAIN_PROGRESS_EVERY_S", 0.0)
    buffer = io.StringIO()
    out = console(file=buffer)
    with progress("parity", 4, unit="images", out=out) as bar:
        for _ in range(4):
            bar.advance()
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "parity: 0/4 images"
    assert lines[1].startswith("parity: 1/4 images (25%)") and "left" in lines[1]
    assert lines[-1].startswith("parity: 4/4 images (100%)")


def test_terminal_progress_draws_a_bar() -> None:
    buffer = io.StringIO()
    out = console(file=buffer, force_terminal=True, width=100)
    with progress("verify: the server", 3, unit="images", out=out) as bar:
        bar.update(3, 3)  # the SDK's (done, total) callback signature
    assert "3/3" in buffer.getvalue()


@pytest.mark.slow
def test_build_piped_result_on_stdout_progress_on_stderr(tmp_path: Path) -> None:
    """The real build of a tiny checkpoint, its output in pipes: the parity stage reports its images on stderr,
    the outcome (with a long output path, whole) is the one thing on stdout."""
    ckpt = make_checkpoint(tmp_path / "ckpt", labels="one", policy="shortest_edge")
    out = tmp_path / LONG / "repository"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "build", "--model", str(ckpt), "--out", str(out), "--parity-photos", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    (result,) = done.stdout.splitlines()
    assert result.startswith(f"built {out} in ") and result.endswith(f"report: {out}/build_report.json")
    err = done.stderr.splitlines()
    assert "  parity with the reference pipeline proven ..." in err  # a stage's start, not only its end
    finals = [line for line in err if line.startswith("parity (") and "image passes (100%)" in line]
    assert finals, done.stderr
    # the resize-modes table: one line per row, its cells together
    (row,) = [line for line in err if "exact (chosen)" in line]
    assert row.split()[-1] == "passes" and len(row.split()) == 6

"""`dfserve bench tune|int8|overhead|gpu` run the focused measurements with their own options, and plain
`dfserve bench` keeps its options (issue 21)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dfserve.bench import cli as bench_cli
from dfserve.cli import build_parser


def test_plain_bench_keeps_its_options() -> None:
    args = build_parser().parse_args(["bench", "--rounds", "2", "--concurrency", "1,4"])
    assert args.func is bench_cli._bench and args.rounds == 2 and args.concurrency == (1, 4)
    assert getattr(args, "measurement", None) is None


@pytest.mark.parametrize("name", sorted(bench_cli.MEASUREMENTS))
def test_each_measurement_gets_the_words_after_its_name(name: str) -> None:
    args = build_parser().parse_args(["bench", name, "REPO", "--seconds", "0.5", "--unknown-to-dfserve"])
    assert args.func is bench_cli._measurement and args.measurement == name
    assert args.measurement_argv == ["REPO", "--seconds", "0.5", "--unknown-to-dfserve"]


@pytest.mark.parametrize("name", ["tune", "int8", "overhead"])
def test_help_names_the_subcommand_and_its_options(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "bench", name, "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and f"usage: dfserve bench {name}" in out.stdout and "--rounds" in out.stdout


def test_a_bad_option_is_refused_by_the_measurements_own_parser() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "bench", "int8", "repo", "--no-such-flag"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "dfserve bench int8: error: unrecognized arguments: --no-such-flag" in out.stderr


@pytest.mark.slow
def test_dfserve_bench_int8_runs_on_a_build(built_repo: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "bench", "int8", str(built_repo), "--seconds", "0.05", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[-3:]] == ["fp32", "int8_dynamic", "int8_static_qdq"]

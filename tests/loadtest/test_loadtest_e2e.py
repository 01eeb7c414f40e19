"""Real, short, headless Locust runs through `dfserve loadtest` against the real Triton server."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dfserve.cli import main
from dfserve.loadtest.options import LoadSettings
from dfserve.loadtest.runner import LoadtestOptions, run_loadtest

pytestmark = pytest.mark.slow

REQUIRED = ("requests", "failures", "rps", "p50_ms", "p90_ms", "p99_ms", "users", "mode")


def check_report(out: Path, summary: dict[str, Any]) -> None:
    assert json.loads((out / "summary.json").read_text())["requests"] == summary["requests"]
    # request-level figures: one sample line per request Locust recorded, percentiles from them
    lines = sum(len(f.read_text().splitlines()) for f in (out / "samples").glob("samples-*.csv"))
    assert summary["percentiles_from"] == "every request's latency"
    assert lines == summary["requests"] + summary["failures"] or lines == summary["requests"]
    for key in REQUIRED:
        assert summary[key] is not None, key
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv", "report.html", "users.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "<html" in (out / "report.html").read_text()[:2000].lower()
    with Image.open(out / "users.png") as png:
        assert png.format == "PNG" and png.width > 100


@pytest.mark.parametrize(("protocol", "mode"), [("http", "file"), ("http", "pixels"), ("grpc", "file")])
def test_constant_load_makes_requests_without_failures(
    triton_server: Any, sample_images: dict[str, Path], tmp_path: Path, protocol: str, mode: str
) -> None:
    host = triton_server.http_url if protocol == "http" else f"grpc://{triton_server.grpc_url}"
    images = next(iter(sample_images.values())).parent
    out = tmp_path / "report"
    summary = run_loadtest(
        LoadtestOptions(
            host=host,
            users=2,
            spawn_rate=2,
            run_time="3s",
            settings=LoadSettings(mode=mode, images=str(images)),  # type: ignore[arg-type]
            out=out,
            echo=False,
        )
    )
    assert summary["requests"] > 0
    assert summary["failures"] == 0, summary["failures_detail"]
    assert summary["mode"] == mode and summary["protocol"] == protocol and summary["users"] == 2
    (row,) = summary["per_request"]
    models = triton_server_spec(triton_server).models
    assert row["name"] == (models.ensemble if mode == "file" else models.engine)
    assert row["avg_bytes"] > 0
    check_report(out, summary)


def triton_server_spec(server: Any) -> Any:
    from dfserve.spec.model import ModelSpec

    return ModelSpec.load(server.repository)


def test_step_ramp_reports_steps_and_a_knee_through_the_cli(
    triton_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ramp"
    code = main(
        [
            "loadtest",
            "--url",
            triton_server.http_url,
            "--concurrency",
            "4",
            "--spawn-rate",
            "4",
            "--shape",
            "step",
            "--step-users",
            "2",
            "--step-time",
            "3",
            "--step-warmup",
            "1",
            "--image-count",
            "2",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == "2 generated photo-like JPEGs, 640x480 to 800x600 (median 0.39 MP)"
    printed = capsys.readouterr()
    # the result on stdout, with the images it is for; Locust's progress and dfserve's own lines on stderr
    assert f"images: {summary['images']}" in printed.out.splitlines() and f"report: {out}" in printed.out
    assert "locust" in printed.err and "locust" not in printed.out
    assert [s["users"] for s in summary["steps"]] == [2, 4]
    assert all(s["requests"] > 0 and s["failures"] == 0 for s in summary["steps"])
    assert summary["knee"]["users"] in (2, 4) and summary["shape"] == "step"
    check_report(out, summary)


def test_distributed_mode_with_two_worker_processes(triton_server: Any, tmp_path: Path) -> None:
    summary = run_loadtest(
        LoadtestOptions(
            host=triton_server.http_url,
            users=2,
            spawn_rate=2,
            run_time="3s",
            processes=2,
            settings=LoadSettings(mode="pixels", image_count=2),
            out=tmp_path / "dist",
            echo=False,
        )
    )
    assert summary["requests"] > 0 and summary["failures"] == 0 and summary["processes"] == 2
    workers = sorted((tmp_path / "dist" / "samples").glob("samples-*.csv"))
    assert len(workers) == 2, workers  # each worker wrote its own requests; the master sent none
    assert sum(len(f.read_text().splitlines()) for f in workers) == summary["requests"]
    # the workers used the master's --dfserve-mode: pixels go to the engine, not the ensemble
    assert [row["name"] for row in summary["per_request"]] == [triton_server_spec(triton_server).models.engine]


def test_failures_are_counted_and_the_cli_exits_non_zero(triton_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    args = ["--concurrency", "1", "--duration", "2s", "--model-name", "no-such-model", "--image-count", "1", "--quiet"]
    code = main(["loadtest", "--url", triton_server.http_url, *args, "--out", str(out)])
    assert code == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] >= 1
    assert "no-such-model" in summary["failures_detail"][0]["error"]


def test_bad_host_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--url", "ftp://x:1", "--duration", "1s"]) == 1
    assert "unsupported URL scheme" in capsys.readouterr().err


def test_plain_locust_runs_the_top_level_locustfile(
    triton_server: Any, sample_images: dict[str, Path], tmp_path: Path
) -> None:
    """What loadtest/README.md tells a user to type: plain Locust on loadtest/locustfile.py (with the sample
    photographs, so that a busy machine spends the short run on requests rather than on generating 12 MP images)."""
    images = next(iter(sample_images.values())).parent
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    locust = Path(sys.executable).with_name("locust")
    result = subprocess.run(
        [
            *(str(locust), "-f", "loadtest/locustfile.py", "--headless", "-u", "2", "-r", "2", "-t", "6s"),
            *("--host", f"http://{triton_server.http_url}", "--csv", str(tmp_path / "plain"), "--only-summary"),
            *("--dfserve-images", str(images)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "plain_stats.csv").open()))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0, result.stderr[-3000:]
    assert int(total["Failure Count"]) == 0

"""`dfserve soak` against a real tritonserver serving a real build of a tiny checkpoint (tests/conftest.py),
with the shipped sample photographs through the `detector` ensemble: the windows, the accounting, the memory
figures of the real process tree, and a failing exit when the server is killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dfserve.cli import main
from dfserve.soak.drift import percent_change
from dfserve.soak.report import write_outputs
from dfserve.soak.run import SoakError, SoakOptions, run_soak
from dfserve.spec.names import SAMPLE_PHOTOS
from dfserve.triton.process import TritonServer
from dfserve.triton.state import stub_shm_regions


def test_options_are_checked_before_any_load(tmp_path: Path) -> None:
    with pytest.raises(SoakError, match="exactly one of --url"):
        SoakOptions().validate()
    with pytest.raises(SoakError, match="--pid goes with --url"):
        SoakOptions(repository=tmp_path, pid=1).validate()
    with pytest.raises(SoakError, match="fewer than two"):
        SoakOptions(url="localhost:1", duration_s=30, window_s=15, warmup="10%").validate()
    with pytest.raises(SoakError, match="no process with pid"):
        SoakOptions(url="localhost:1", pid=2**22 + 1, duration_s=60).validate()


def test_cli_names_a_bad_duration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["soak", "--url", "localhost:1", "--duration", "ten minutes"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --duration: duration 'ten minutes' is not like" in err and len(err.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_soak_of_its_own_server_finds_the_knee_and_accounts_for_every_request(built_repo: Path, tmp_path: Path) -> None:
    opts = SoakOptions(
        repository=built_repo,
        duration_s=30,
        window_s=5,
        warmup="10s",
        timeout_s=20,
        ramp_step_s=3,
        ramp_max=4,
        sample_s=1,
        max_growth_pct=25,  # a loaded shared test machine; the real bar is for the 10-minute run
    )
    result = write_outputs(run_soak(opts), tmp_path / "out")

    # the knee of the short ramp is the soak's concurrency
    assert result.ramp and result.knee is not None
    assert result.concurrency == result.knee["users"] in {s.users for s in result.ramp}
    ramp = result.ramp_accounting
    assert ramp is not None and ramp["sent"] == ramp["ok"] + ramp["failed"] and ramp["failed"] == 0
    assert ramp["ok"] >= sum(s.requests for s in result.ramp)
    # six windows of 5 s, the first two the warm-up; each window counted its own requests
    windows = result.windows
    assert len(windows) == 6
    assert [w.warmup for w in windows] == [True, True, False, False, False, False]
    assert all(w.requests > 0 and w.p50_ms is not None and w.p99_ms is not None for w in windows)
    assert all(w.end_s > w.start_s for w in windows)
    # every request accounted for: sent = ok + failed, none failed, none hung
    t = result.totals
    assert t.sent == t.ok + t.failed == sum(w.requests for w in windows)
    assert t.failed == 0 and t.hung == 0, t.first_errors
    assert result.target["model"] == "detector"
    assert result.target["payloads"] == [f"{name}.jpg" for name in SAMPLE_PHOTOS]
    # memory: tritonserver and its stubs (preprocess, vit), their /dev/shm regions, sampled from the real tree
    assert result.memory_start is not None
    names = {p["name"] for p in result.memory_start["processes"]}
    assert {"tritonserver", "stub preprocess", "stub vit"} <= names
    assert any(r.startswith("triton_python_backend_shm_region_") for r in result.memory_start["shm_regions"])
    assert all(w.rss_bytes and w.rss_bytes > 50 * 2**20 and w.shm_bytes and w.stubs and w.stubs >= 2 for w in windows)
    # growth: the last window's mean RSS against the first post-warm-up window's
    growth = result.verdict.memory_growth
    assert growth is not None and growth.windows == 4
    assert growth.first == windows[2].rss_bytes and growth.last == windows[-1].rss_bytes
    assert growth.change_pct == pytest.approx(percent_change(windows[2].rss_bytes, windows[-1].rss_bytes))
    # seconds of measurement: the change over the span, no rate per hour extrapolated from it
    assert growth.slope_per_hour is None and growth.fitted_change_pct is not None and growth.span_s > 0
    p99 = result.verdict.p99_drift
    assert p99 is not None and p99.first == windows[2].p99_ms and p99.last == windows[-1].p99_ms
    assert result.verdict.passed, result.verdict.problems

    doc = json.loads((tmp_path / "out" / "soak.json").read_text())
    assert doc["totals"]["sent"] == t.sent and len(doc["windows"]) == 6 and doc["passed"] is True
    md = (tmp_path / "out" / "soak.md").read_text()
    assert "# Soak: PASSED" in md and "RSS (MiB), server + stubs" in md
    assert "too short to say per hour" in md and "- images: 8 sample photographs shipped with dfserve, " in md
    with Image.open(tmp_path / "out" / "soak.png") as png:
        assert png.format == "PNG" and png.width > 500 and png.height > 400


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_soak_fails_naming_the_failures_when_the_server_is_killed(
    built_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = TritonServer(built_repo, http_port=0, grpc_port=0, metrics_port=0)
    server.start(timeout=240)
    try:
        pid = server.pid
        assert pid is not None
        regions = stub_shm_regions(pid)
        codes: list[int] = []
        out = tmp_path / "out"
        argv = [
            "soak", "--url", server.http_url, "--pid", str(pid), "--concurrency", "2", "--duration", "24s",
            "--window", "4s", "--warmup", "4s", "--timeout", "3", "--out", str(out),
        ]  # fmt: skip
        runner = threading.Thread(target=lambda: codes.append(main(argv)))
        runner.start()
        time.sleep(14)
        os.kill(pid, signal.SIGKILL)
        runner.join(120)
        assert not runner.is_alive(), "the soak hung after the server died"
    finally:
        server.stop()
    assert codes == [1]
    doc: dict[str, Any] = json.loads((out / "soak.json").read_text())
    t = doc["totals"]
    assert t["sent"] == t["ok"] + t["failed"]
    assert t["ok"] > 0 and t["failed"] > 0 and t["hung"] == 0
    assert set(t["errors"]) <= {"ServerUnavailableError", "RequestTimeoutError", "InferenceError"}, t["errors"]
    problems = doc["verdict"]["problems"]
    assert any(f"of {t['sent']} requests failed" in p for p in problems)
    assert any("server process was gone" in p for p in problems)
    windows = doc["windows"]
    assert windows[0]["server_alive"] is True and windows[-1]["server_alive"] is False
    assert windows[-1]["rss_bytes"] is None
    # the regions seen were the stubs' own
    assert regions & set(doc["memory_start"]["shm_regions"])
    printed = capsys.readouterr()
    # the verdict is the result (stdout); the windows as they came, diagnostics (stderr)
    assert "FAILED:" in printed.out and "requests failed" in printed.out
    assert "window " in printed.err and "FAILED:" not in printed.err and f"report: {out}" in printed.out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_soak_without_a_pid_says_memory_is_not_measured(
    triton_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "soak", "--url", triton_server.http_url, "--concurrency", "2", "--duration", "10s", "--window", "5s",
        "--warmup", "0", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((tmp_path / "soak.json").read_text())
    assert doc["verdict"]["memory_growth"] is None and doc["memory_start"] is None
    assert all(w["rss_bytes"] is None and w["server_alive"] is None for w in doc["windows"])
    assert any("not measured" in n for n in doc["verdict"]["notes"])
    printed = capsys.readouterr()
    assert "NOT MEASURED (no pid)" in printed.err  # said as the run starts
    assert "memory after warm-up not measured" in printed.out  # and in the verdict

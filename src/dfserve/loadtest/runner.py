"""`dfserve loadtest`: run the locustfile headless in a subprocess and turn its output into a report.

Locust runs in its own process because importing it monkey-patches everything for gevent, which the `dfserve`
process (and a test session) must not be. The output folder receives Locust's CSV files and HTML report, the
step ramp's figures (`steps.json`), Locust's log, `summary.json` and `users.png` (throughput and latency
against users).

`processes > 1` uses Locust's distributed mode on this machine (a master and that many workers forked from it,
all running the same locustfile); see loadtest/README.md for a master and workers on several machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from dfserve.commandline import default_out_dir
from dfserve.errors import LoadtestError, LocustRunError
from dfserve.loadtest.options import LoadSettings
from dfserve.loadtest.ramp import read_steps
from dfserve.loadtest.report import (
    UserPoint,
    history_users,
    parse_exceptions,
    parse_failures,
    parse_stats,
    plot_users,
    points_by_users,
    points_from_samples,
    points_from_steps,
)
from dfserve.loadtest.samples import latency_figures, read_samples
from dfserve.measure.knee import find_knee
from dfserve.measure.payloads import describe_generated, describe_images, load_folder
from dfserve.measure.stats import parse_duration
from dfserve.measure.target import Protocol, split_host
from dfserve.terminal import console as make_console

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
CSV_PREFIX = "locust"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "users.png"
HTML_FILE = "report.html"
STEPS_FILE = "steps.json"
LOG_FILE = "locust.log"
SAMPLES_DIR = "samples"


def run_time_seconds(text: str) -> int:
    """Locust's run-time syntax (``90``, ``30s``, ``2m``, ``1h30m``) in whole seconds, as Locust takes it."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise LoadtestError(f"run time: {exc}") from exc
    if seconds != int(seconds):
        raise LoadtestError(f"run time must be whole seconds for Locust, got {text!r}")
    return int(seconds)


@dataclass
class LoadtestOptions:
    host: str
    users: int = 4
    spawn_rate: float = 2.0
    run_time: str | None = "30s"
    """None: until the step ramp ends (step shape only)."""
    protocol: Protocol | None = None
    """None: from the host's scheme, else http."""
    settings: LoadSettings = field(default_factory=LoadSettings)
    out: Path | None = None
    processes: int = 1
    """More than 1: Locust's distributed mode on this machine (one master, this many workers)."""
    locustfile: Path = LOCUSTFILE
    extra_args: tuple[str, ...] = ()
    echo: bool = True
    """Stream Locust's console output (its periodic statistics tables) while it runs."""

    def validate(self) -> tuple[str, Protocol]:
        if self.users < 1:
            raise LoadtestError(f"users must be at least 1, got {self.users}")
        if self.spawn_rate <= 0:
            raise LoadtestError(f"spawn rate must be positive, got {self.spawn_rate}")
        if self.processes < 1:
            raise LoadtestError(f"processes must be at least 1, got {self.processes}")
        if self.run_time is None and self.settings.shape != "step":
            raise LoadtestError("a constant load needs a run time (e.g. --run-time 30s)")
        if self.run_time is not None:
            run_time_seconds(self.run_time)
        if not self.locustfile.is_file():
            raise LoadtestError(f"locustfile not found: {self.locustfile}")
        protocol: Protocol | None = self.protocol
        if protocol is None and "://" not in self.host:
            protocol = "http"
        url, proto, _ = split_host(self.host, protocol)
        return url, proto

    def deadline_s(self) -> float:
        """How long the subprocess may run before it is considered hung."""
        spawn = self.users / self.spawn_rate
        if self.run_time is not None:
            return run_time_seconds(self.run_time) + spawn + 120
        s = self.settings
        steps = -(-(s.max_users or self.users) // s.step_users)
        return steps * (s.step_time + s.step_users / self.spawn_rate + 2) + 120


def locust_command(opts: LoadtestOptions, out: Path, protocol: Protocol) -> list[str]:
    settings = opts.settings
    if settings.protocol != protocol:
        settings = _replace(settings, protocol=protocol)
    if settings.shape == "step" and not settings.steps_file:
        settings = _replace(settings, steps_file=str(out / STEPS_FILE))
    if not settings.samples_dir:
        settings = _replace(settings, samples_dir=str(out / SAMPLES_DIR))
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(opts.locustfile),
        "--headless",
        "--host",
        opts.host,
        "--users",
        str(opts.users),
        "--spawn-rate",
        str(opts.spawn_rate),
        "--csv",
        str(out / CSV_PREFIX),
        "--csv-full-history",
        "--html",
        str(out / HTML_FILE),
        "--stop-timeout",
        str(max(5, int(settings.timeout))),
        "--exit-code-on-error",
        "3",
        *settings.to_locust_args(),
    ]
    if opts.run_time is not None:
        cmd += ["--run-time", opts.run_time]
    if opts.processes > 1:
        cmd += ["--processes", str(opts.processes)]
    cmd += list(opts.extra_args)
    return cmd


def _replace(settings: LoadSettings, **changes: Any) -> LoadSettings:
    from dataclasses import replace

    return replace(settings, **changes)


def _stream(proc: subprocess.Popen[str], log: Path, echo: Console | None, tail: deque[str]) -> None:
    assert proc.stdout is not None
    with log.open("w") as fh:
        for line in proc.stdout:
            fh.write(line)
            tail.append(line.rstrip("\n"))
            if echo is not None:
                echo.out(line.rstrip("\n"), highlight=False)


def run_loadtest(opts: LoadtestOptions, console: Console | None = None) -> dict[str, Any]:
    """Run Locust and write the report; returns the summary (also in `<out>/summary.json`).

    Raises LocustRunError when Locust cannot run or writes no statistics. Failed requests do not raise: the
    summary counts them and the caller decides (the CLI exits non-zero).
    """
    url, protocol = opts.validate()
    console = console or make_console(stderr=True)
    out = (opts.out or default_out_dir()).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    cmd = locust_command(opts, out, protocol)
    settings = opts.settings
    console.print(
        f"[bold]locust[/] {protocol} {opts.host}: mode={settings.mode} shape={settings.shape} users={opts.users} "
        f"run-time={opts.run_time or 'until the ramp ends'} -> {out}",
        highlight=False,
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=40)
    try:
        proc = subprocess.Popen(
            cmd, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
    except OSError as exc:
        raise LocustRunError(f"cannot start Locust ({cmd[0]} -m locust): {exc}") from exc
    reader = threading.Thread(
        target=_stream, args=(proc, out / LOG_FILE, console if opts.echo else None, tail), daemon=True
    )
    reader.start()
    try:
        code = proc.wait(timeout=opts.deadline_s())
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise LocustRunError(
            f"Locust did not finish within {opts.deadline_s():.0f}s; killed (log: {out / LOG_FILE})"
        ) from exc
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(30)
        raise
    finally:
        reader.join(10)
    duration = time.monotonic() - started
    if code not in (0, 3):
        raise LocustRunError(f"Locust exited with code {code}:\n" + "\n".join(list(tail)[-15:]))
    try:
        summary = summarize(out, opts, protocol, url, duration, code)
    except LocustRunError as exc:
        raise LocustRunError(f"{exc}; Locust's last lines:\n" + "\n".join(list(tail)[-15:])) from exc
    summary["command"] = cmd
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarize(
    out: Path, opts: LoadtestOptions, protocol: Protocol, url: str, duration_s: float, exit_code: int
) -> dict[str, Any]:
    prefix = out / CSV_PREFIX
    total, per_name = parse_stats(prefix)
    history = points_by_users(prefix)
    settings = opts.settings
    steps = read_steps(out / STEPS_FILE) if (out / STEPS_FILE).is_file() else []
    knee = find_knee(steps, settings.min_gain) if steps else None
    samples = read_samples(out / SAMPLES_DIR)
    if samples is not None and samples.ends.size:
        # Request-level figures: every request Locust recorded, percentiles on the raw latencies.
        figures = latency_figures(samples.ok_latencies_ms)
        total = {**total, "requests": int(samples.ends.size), "failures": int(samples.failed.sum())}
        total.update({k: figures[k] for k in ("p50_ms", "p90_ms", "p99_ms")})
        if "caution" in figures:
            total["caution"] = figures["caution"]
    if steps:
        points = points_from_steps(steps)
    elif samples is not None and samples.ends.size:
        points = points_from_samples(samples, history_users(prefix))
    else:  # the ramp-up seconds from the history; the full-load point from the whole run's totals
        top = max((p.users for p in history), default=opts.users)
        points = [p for p in history if p.users < top]
        if total["requests"] and total["p50_ms"] is not None:
            points.append(
                UserPoint(
                    top,
                    total["rps"],
                    total["p50_ms"],
                    total["p90_ms"] or total["p50_ms"],
                    total["p99_ms"] or total["p50_ms"],
                    round(duration_s),
                )
            )
    plot = plot_users(
        points,
        out / PLOT_FILE,
        f"{protocol} {settings.mode} ({'step ramp' if steps else 'constant'}), batch {settings.batch}",
        knee.users if knee else None,
    )
    return {
        "requests": total["requests"],
        "failures": total["failures"],
        "rps": total["rps"],
        "images_per_s": total["rps"] * settings.batch,
        "p50_ms": total["p50_ms"],
        "p90_ms": total["p90_ms"],
        "p99_ms": total["p99_ms"],
        "percentiles_from": "every request's latency" if samples is not None else "Locust's histogram",
        "images": (
            describe_images(load_folder(settings.images), f"images from {settings.images}")
            if settings.images
            else describe_generated(settings.image_count)
        ),
        "caution": total.get("caution"),
        "avg_ms": total["avg_ms"],
        "max_ms": total["max_ms"],
        "users": max((p.users for p in history), default=opts.users),
        "mode": settings.mode,
        "protocol": protocol,
        "shape": settings.shape,
        "batch": settings.batch,
        "host": url,
        "processes": opts.processes,
        "duration_s": round(duration_s, 1),
        "locust_exit_code": exit_code,
        "per_request": per_name,
        "by_users": [p.__dict__ for p in points],
        "steps": [s.as_dict() for s in steps],
        "knee": knee.as_dict() if knee else None,
        "failures_detail": parse_failures(prefix),
        "exceptions": parse_exceptions(prefix),
        "files": {
            "html": str(out / HTML_FILE),
            "csv_stats": f"{prefix}_stats.csv",
            "csv_history": f"{prefix}_stats_history.csv",
            "png": str(plot),
            "log": str(out / LOG_FILE),
        },
    }

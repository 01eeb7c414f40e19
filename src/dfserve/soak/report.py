"""What `dfserve soak` shows and writes: a live table while it runs, then soak.json, soak.md and soak.png
(server memory, /dev/shm, latency and throughput over time: one panel each, sharing the time axis, the warm-up
shaded; one quantity per axis, so no two scales are read against each other)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dfserve.measure.closedloop import ClosedLoop
from dfserve.measure.knee import StepFigures
from dfserve.soak.drift import MIN_EXTRAPOLATION_S
from dfserve.soak.run import SoakHooks, SoakResult
from dfserve.soak.windows import Window

JSON_FILE = "soak.json"
MARKDOWN_FILE = "soak.md"
PLOT_FILE = "soak.png"
LIVE_ROWS = 12
MIN_WINDOW_REQUESTS = 100
"""A window's p99 from fewer requests than this is its slowest one or two requests."""
MIB = 2**20


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def window_table(windows: list[Window], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("win", "t (s)", "req", "failed", "img/s", "p50 ms", "p99 ms", "RSS MiB", "shm MiB", "stubs"):
        table.add_column(col, justify="right")
    for w in windows:
        style = "red" if w.failed or w.overdue or w.server_alive is False else ("dim" if w.warmup else "")
        table.add_row(
            f"{w.index}{' w' if w.warmup else ''}",
            f"{w.end_s:.0f}",
            str(w.requests),
            str(w.failed + w.overdue),
            f"{w.images_per_s:.1f}",
            _ms(w.p50_ms),
            _ms(w.p99_ms),
            _mib(w.rss_bytes),
            _mib(w.shm_bytes),
            "-" if w.stubs is None else str(w.stubs),
            style=style,
        )
    return table


class LiveDisplay(SoakHooks):
    """A table of the last windows under a line of running totals, redrawn in place on a terminal; one line per
    window elsewhere (a log file, CI)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.windows: list[Window] = []
        self.header = ""
        self.duration_s = 0.0
        self.started_at = 0.0
        self._live: Live | None = None
        self._loop: ClosedLoop | None = None

    def started(self, result_so_far: dict[str, Any]) -> None:
        t = result_so_far["target"]
        self.duration_s = result_so_far["duration_s"]
        self.header = (
            f"soak {t['protocol']} {t['url']} -> {t['model']} ({t['mode']}), {self.duration_s:.0f}s, "
            f"warm-up {result_so_far['warmup_s']:.0f}s, memory of "
            + (f"pid {t['pid']}" if t["pid"] else "the server: NOT MEASURED (no pid)")
        )
        self.console.print(self.header, highlight=False, soft_wrap=True)
        if t.get("images"):
            self.console.print(f"images: {t['images']}", highlight=False, soft_wrap=True)

    def ramp_step(self, step: StepFigures) -> None:
        self.console.print(
            f"ramp: {step.users:>3} threads  {step.rps:7.1f} img/s  p50 {step.p50_ms:6.0f} ms  "
            f"p99 {step.p99_ms:6.0f} ms  failed {step.failures}",
            highlight=False,
        )

    def _render(self) -> Group:
        elapsed = time.monotonic() - self.started_at
        sent = ok = failed = 0
        for w in self.windows:
            ok += w.ok
            failed += w.failed
        in_flight = self._loop.in_flight() if self._loop is not None else 0
        sent = self._loop.sent if self._loop is not None else 0
        share = min(elapsed / self.duration_s, 1.0) if self.duration_s else 0.0
        bar = "█" * int(share * 30) + "░" * (30 - int(share * 30))
        line = Text(
            f"{bar} {elapsed:.0f}/{self.duration_s:.0f}s  sent {sent}  ok {ok}  failed {failed}  in flight {in_flight}",
            style="bold red" if failed else "bold",
        )
        return Group(window_table(self.windows[-LIVE_ROWS:], "windows (w: warm-up)"), line)

    def load_started(self, loop: ClosedLoop, concurrency: int) -> None:
        self.started_at = time.monotonic()
        self._loop = loop
        self.console.print(f"soak: {concurrency} closed-loop threads", highlight=False)
        if self.console.is_terminal:
            self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2)
            self._live.start()

    def window(self, window: Window, loop: ClosedLoop) -> None:
        self.windows.append(window)
        if self._live is None:
            self.console.print(
                f"window {window.index:>3}{' (warm-up)' if window.warmup else ''} t={window.end_s:6.0f}s  "
                f"req {window.requests:5}  failed {window.failed + window.overdue}  "
                f"{window.images_per_s:6.1f} img/s  p50 {_ms(window.p50_ms)} ms  p99 {_ms(window.p99_ms)} ms  "
                f"RSS {_mib(window.rss_bytes)} MiB  shm {_mib(window.shm_bytes)} MiB  stubs {window.stubs}",
                highlight=False,
                soft_wrap=True,
            )

    def finished(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def markdown(result: SoakResult) -> str:
    v, t, tgt = result.verdict, result.totals, result.target
    opts = result.options
    lines = [
        f"# Soak: {'PASSED' if v.passed else 'FAILED'}",
        "",
        f"- target: {tgt['protocol']} {tgt['url']}, model `{tgt['model']}` ({tgt['mode']}), "
        f"{'server started by the soak' if tgt['own_server'] else 'a running server'}, memory of "
        + (f"pid {tgt['pid']}" if tgt["pid"] else "the server **not measured** (no pid)"),
        f"- load: {result.concurrency} closed-loop threads"
        + (f" (the knee of the ramp: {result.knee['rps']:.1f} img/s)" if result.knee else " (given)")
        + f", {len(tgt['payloads'])} files cycled, timeout {opts['timeout_s']:g}s",
        f"- images: {tgt.get('images', '-')} (images/s depends on their sizes)",
        f"- {t.duration_s:.0f}s in {len(result.windows)} windows of {opts['window_s']:g}s, "
        f"warm-up {opts['warmup_s']:.0f}s, memory bar {opts['max_growth_pct']:g}%",
        "",
        "## Totals",
        "",
        "| sent | ok | failed | hung | images/s | p50 ms | p99 ms | max ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {t.sent} | {t.ok} | {t.failed} | {t.hung} | {t.images_per_s:.2f} | {_ms(t.p50_ms)} | {_ms(t.p99_ms)} "
        f"| {_ms(t.max_ms)} |",
        "",
        "## After the warm-up",
        "",
        f"| figure | first window | last window | change | fitted change | rate (per hour from "
        f"{MIN_EXTRAPOLATION_S / 60:.0f} min measured) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, d, unit in (
        ("RSS (MiB), server + stubs", v.memory_growth, MIB),
        ("/dev/shm (MiB)", v.shm_growth, MIB),
        ("p50 (ms)", v.p50_drift, 1),
        ("p99 (ms)", v.p99_drift, 1),
    ):
        if d is None:
            lines.append(f"| {label} | - | - | - | - | - |")
            continue
        lines.append(
            f"| {label} | {d.first / unit:.1f} | {d.last / unit:.1f} | {_pct(d.change_pct)} | "
            f"{_pct(d.fitted_change_pct)} | {d.rate(unit) if d.windows > 1 else '-'} |"
        )
    thin = [w for w in result.windows if not w.warmup and 0 < w.ok < MIN_WINDOW_REQUESTS]
    measured = sum(1 for w in result.windows if not w.warmup)
    if thin:
        lines += [
            "",
            f"**Caution:** the p99 of {len(thin)} of {measured} windows after the warm-up rests on fewer than "
            f"{MIN_WINDOW_REQUESTS} requests (fewest: {min(w.ok for w in thin)}): it is the slowest few requests, "
            "not a percentile, and its drift is rough (longer --window for more).",
        ]
    lines += ["", "## Verdict", ""]
    lines += [f"- **{p}**" for p in v.problems] or ["- every request answered, memory within the bar"]
    lines += [f"- {n}" for n in v.notes]
    if t.first_errors:
        lines += ["", "First errors:", ""] + [f"- `{e}`" for e in t.first_errors]
    if result.ramp:
        lines += ["", "## Ramp", "", "| threads | img/s | p50 ms | p99 ms | failed |"]
        lines += ["| ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {s.users} | {s.rps:.1f} | {s.p50_ms:.0f} | {s.p99_ms:.0f} | {s.failures} |" for s in result.ramp]
        if result.ramp_accounting:
            r = result.ramp_accounting
            lines += [
                "",
                f"The ramp sent {r['sent']} requests: {r['ok']} ok, {r['failed']} failed (not in the totals).",
            ]
    lines += [
        "",
        "## Windows",
        "",
        "| # | end s | requests | failed | images/s | p50 ms | p99 ms | RSS MiB | shm MiB | processes |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in result.windows:
        lines.append(
            f"| {w.index}{' (warm-up)' if w.warmup else ''} | {w.end_s:.0f} | {w.requests} | {w.failed} | "
            f"{w.images_per_s:.1f} | {_ms(w.p50_ms)} | {_ms(w.p99_ms)} | {_mib(w.rss_bytes)} | {_mib(w.shm_bytes)} "
            f"| {'-' if w.processes is None else w.processes} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: SoakResult, path: Path) -> Path:
    """Four panels over time, one quantity each: RSS of server + stubs, /dev/shm, latency (p50, p99) and
    throughput. Every axis starts at 0 except RSS, which is zoomed to at least the growth bar around its values
    (from 0 a leak of a few percent would be a flat line); its label says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = result.windows
    t = [w.end_s for w in windows]
    fig, (mem, shm_ax, lat, rate) = plt.subplots(
        4, 1, figsize=(9, 10), dpi=110, sharex=True, gridspec_kw={"height_ratios": [3, 1.4, 3, 2]}
    )
    warmup_s = float(result.options["warmup_s"])
    for ax in (mem, shm_ax, lat, rate):
        if warmup_s > 0:
            ax.axvspan(0, warmup_s, color="0.9", label="warm-up (not judged)" if ax is mem else None)
        ax.grid(True, alpha=0.3)
    rss = [(w.end_s, w.rss_bytes / MIB) for w in windows if w.rss_bytes is not None]
    shm = [(w.end_s, w.shm_bytes / MIB) for w in windows if w.shm_bytes is not None]
    bar = float(result.options["max_growth_pct"]) / 100
    if rss:
        mem.plot(*zip(*rss, strict=True), marker="o", ms=3, color="tab:blue", label="RSS, tritonserver + stubs")
        values = [v for _, v in rss]
        mid = (max(values) + min(values)) / 2
        half = max((max(values) - min(values)) / 2 * 1.15, mid * max(bar, 0.02))
        mem.set_ylim(max(mid - half, 0), mid + half)
        mem.set_ylabel("RSS (MiB)\n(zoomed, not from 0)")
        growth = result.verdict.memory_growth
        if growth is not None and growth.change_pct is not None:
            mem.set_title(
                f"memory: {growth.change_pct:+.1f}% after warm-up (fitted {growth.fitted_change_pct or 0:+.1f}%, "
                f"bar {bar * 100:g}%), {growth.rate(MIB, ' MiB')}",
                fontsize=9,
            )
        mem.legend(loc="lower right", fontsize=8)
    else:
        mem.text(0.5, 0.5, "server memory not measured (no pid)", ha="center", va="center", transform=mem.transAxes)
        mem.set_ylabel("RSS (MiB)")
    if shm:
        shm_ax.plot(*zip(*shm, strict=True), marker="s", ms=3, color="tab:orange", label="/dev/shm regions")
        shm_ax.set_ylim(bottom=0, top=max(max(v for _, v in shm) * 1.3, 1.0))
        shm_ax.legend(loc="lower right", fontsize=8)
    else:
        shm_ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=shm_ax.transAxes)
    shm_ax.set_ylabel("/dev/shm (MiB)")
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        points = [(w.end_s, getattr(w, key)) for w in windows if getattr(w, key) is not None]
        if points:
            lat.plot(*zip(*points, strict=True), marker="o", ms=3, label=label)
    failed = [(w.end_s, w.failed + w.overdue) for w in windows if w.failed or w.overdue]
    for ax in (lat, rate):
        for x, _ in failed:
            ax.axvline(x, color="red", alpha=0.4)
    if failed:
        lat.plot([], [], color="red", alpha=0.4, label="window with failures")
    lat.set_ylabel("latency (ms)")
    lat.set_ylim(bottom=0, top=max([w.p99_ms or 0 for w in windows] + [1.0]) * 1.15)
    lat.legend(loc="lower right", fontsize=8)
    rate.plot(t, [w.images_per_s for w in windows], marker="o", ms=3, color="tab:green", label="images/s")
    rate.set_ylim(bottom=0, top=max([w.images_per_s for w in windows] + [1.0]) * 1.15)
    rate.set_ylabel("throughput\n(images/s)")
    rate.set_xlabel("time (s), each point a window's end")
    rate.legend(loc="lower right", fontsize=8)
    tot = result.totals
    fig.suptitle(
        f"dfserve soak: {result.target['model']} at {result.concurrency} threads, {tot.sent} requests, "
        f"{tot.failed} failed - {'PASSED' if result.verdict.passed else 'FAILED'}",
        fontsize=10,
    )
    if t:
        rate.set_xlim(0, max(t))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(result: SoakResult, out: Path) -> SoakResult:
    out.mkdir(parents=True, exist_ok=True)
    result.files = {"json": str(out / JSON_FILE), "markdown": str(out / MARKDOWN_FILE), "png": str(out / PLOT_FILE)}
    plot(result, out / PLOT_FILE)
    (out / MARKDOWN_FILE).write_text(markdown(result))
    (out / JSON_FILE).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result


def print_verdict(result: SoakResult, console: Console) -> None:
    v, t = result.verdict, result.totals
    growth = v.memory_growth
    console.print(
        f"sent {t.sent} = ok {t.ok} + failed {t.failed}; {t.images_per_s:.2f} images/s; "
        f"p50 {_ms(t.p50_ms)} ms, p99 {_ms(t.p99_ms)} ms; memory after warm-up "
        + (
            f"{_pct(growth.change_pct)} (fitted {_pct(growth.fitted_change_pct)})"
            if growth is not None
            else ("not computed" if result.target["pid"] else "not measured")
        )
        + f"; p99 drift {_pct(v.p99_drift.change_pct if v.p99_drift else None)}",
        highlight=False,
    )
    if result.target.get("images"):
        console.print(f"images: {result.target['images']}", highlight=False)
    for note in v.notes:
        console.print(f"note: {note}", highlight=False)
    if v.passed:
        console.print("[bold green]soak passed[/]")
    else:
        for problem in v.problems:
            console.print("[bold red]FAILED:[/]", end=" ")
            console.print(problem, markup=False, highlight=False)
    console.print(f"report: {Path(result.files.get('json', '.')).parent}", highlight=False)

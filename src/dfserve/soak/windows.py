"""The soak's windows (what each measured: requests, failures, latency, the server's memory), the run's totals,
and the verdict: failed requests and memory growth after the warm-up (`dfserve.soak.drift`)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dfserve.measure.closedloop import ClosedLoop, Outcome, percentile
from dfserve.measure.processes import TreeMemory
from dfserve.soak.drift import Drift, drift


@dataclass(frozen=True)
class Window:
    """What one window measured; requests are counted in the window they finished in."""

    index: int
    start_s: float
    end_s: float
    warmup: bool
    requests: int
    ok: int
    failed: int
    errors: dict[str, int]
    images_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    overdue: int
    """Requests in flight past their timeout + grace at the window's end (hung so far)."""
    server_alive: bool | None
    """None: memory not measured (no pid)."""
    rss_bytes: float | None
    """Mean of the window's samples of the tree's RSS."""
    rss_max_bytes: int | None
    shm_bytes: float | None
    shm_regions: int | None
    processes: int | None
    stubs: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_window(
    index: int,
    start_s: float,
    end_s: float,
    warmup: bool,
    outcomes: Sequence[Outcome],
    overdue: int,
    memory: Sequence[TreeMemory] | None,
) -> Window:
    latencies = sorted(o.latency_s * 1000 for o in outcomes if o.error is None)
    errors = Counter(o.error for o in outcomes if o.error is not None)
    alive = [m for m in memory or () if m.alive]
    span = end_s - start_s
    return Window(
        index=index,
        start_s=round(start_s, 3),
        end_s=round(end_s, 3),
        warmup=warmup,
        requests=len(outcomes),
        ok=len(latencies),
        failed=sum(errors.values()),
        errors=dict(errors),
        images_per_s=len(latencies) / span if span > 0 else 0.0,
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        max_ms=latencies[-1] if latencies else None,
        overdue=overdue,
        server_alive=None if memory is None else bool(memory) and memory[-1].alive,
        rss_bytes=sum(m.rss_bytes for m in alive) / len(alive) if alive else None,
        rss_max_bytes=max(m.rss_bytes for m in alive) if alive else None,
        shm_bytes=sum(m.shm_bytes for m in alive) / len(alive) if alive else None,
        shm_regions=len(alive[-1].shm_regions) if alive else None,
        processes=len(alive[-1].processes) if alive else None,
        stubs=alive[-1].stubs if alive else None,
    )


@dataclass(frozen=True)
class Totals:
    sent: int
    ok: int
    failed: int
    hung: int
    """Still running at the end, past timeout + grace (included in `failed`)."""
    errors: dict[str, int]
    first_errors: list[str]
    duration_s: float
    images_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def totals(windows: Sequence[Window], outcomes: Sequence[Outcome], sent: int, hung: int, duration_s: float) -> Totals:
    latencies = sorted(o.latency_s * 1000 for o in outcomes if o.error is None)
    errors = Counter(o.error for o in outcomes if o.error is not None)
    if hung:
        errors["Hung"] += hung
    failed = sum(errors.values())
    return Totals(
        sent=sent,
        ok=len(latencies),
        failed=failed,
        hung=hung,
        errors=dict(errors),
        first_errors=[o.message for o in outcomes if o.error is not None][:5],
        duration_s=round(duration_s, 1),
        images_per_s=len(latencies) / duration_s if duration_s > 0 else 0.0,
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        max_ms=latencies[-1] if latencies else None,
    )


@dataclass(frozen=True)
class Verdict:
    memory_growth: Drift | None
    """Of the windows' mean RSS after the warm-up (None when memory is not measured)."""
    shm_growth: Drift | None
    p50_drift: Drift | None
    p99_drift: Drift | None
    problems: list[str]
    """Why the soak failed (empty: it passed)."""
    notes: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "problems": self.problems,
            "notes": self.notes,
            "memory_growth": self.memory_growth.as_dict() if self.memory_growth else None,
            "shm_growth": self.shm_growth.as_dict() if self.shm_growth else None,
            "p50_drift": self.p50_drift.as_dict() if self.p50_drift else None,
            "p99_drift": self.p99_drift.as_dict() if self.p99_drift else None,
        }


def _series(windows: Sequence[Window], key: str) -> tuple[list[float], list[float]]:
    times, values = [], []
    for w in windows:
        value = getattr(w, key)
        if value is not None:
            times.append(w.end_s)
            values.append(float(value))
    return times, values


def judge(
    windows: Sequence[Window],
    total: Totals,
    max_growth_pct: float,
    memory_measured: bool,
    *,
    ramp_failed: int = 0,
    interrupted_at: float | None = None,
) -> Verdict:
    """The soak's verdict: failed requests (in the ramp too), memory growth after the warm-up, a server gone and
    an interrupted run are problems; the rest is said."""
    measured = [w for w in windows if not w.warmup]
    memory = drift(*_series(measured, "rss_bytes"))
    problems: list[str] = []
    notes: list[str] = []
    if interrupted_at is not None:
        problems.append(f"interrupted after {interrupted_at:.0f}s: not a full soak")
    if ramp_failed:
        problems.append(f"{ramp_failed} requests failed during the ramp that looked for the knee")
    if total.failed:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(total.errors.items(), key=lambda kv: -kv[1]))
        problems.append(f"{total.failed} of {total.sent} requests failed ({kinds})")
    if total.sent == 0:
        problems.append("no request was sent")
    if not memory_measured:
        notes.append("server memory not measured: no pid of tritonserver (give --pid with --url)")
    elif memory is None or memory.windows < 2:
        problems.append("memory growth not computed: fewer than two measured windows after the warm-up")
    elif memory.change_pct is not None and memory.change_pct > max_growth_pct:
        problems.append(
            f"memory grew {memory.change_pct:.1f}% after the warm-up (first {memory.first / 2**20:.0f} MiB, "
            f"last {memory.last / 2**20:.0f} MiB), above --max-growth {max_growth_pct:g}%"
        )
    if memory_measured and any(w.server_alive is False for w in windows):
        gone = next(w for w in windows if w.server_alive is False)
        problems.append(f"the server process was gone by window {gone.index} (t={gone.end_s:.0f}s)")
    if sum(w.ok for w in measured) == 0 and total.sent:
        notes.append("no successful request after the warm-up: latency drift not computed")
    return Verdict(
        memory_growth=memory,
        shm_growth=drift(*_series(measured, "shm_bytes")),
        p50_drift=drift(*_series(measured, "p50_ms")),
        p99_drift=drift(*_series(measured, "p99_ms")),
        problems=problems,
        notes=notes,
    )


def run_windows(
    loop: ClosedLoop,
    *,
    concurrency: int,
    duration_s: float,
    window_s: float,
    warmup_s: float,
    sample: Callable[[], TreeMemory] | None,
    sample_s: float,
    on_window: Callable[[Window, ClosedLoop], None] | None = None,
) -> tuple[list[Window], list[Outcome], float, int, float | None]:
    """Run the load for `duration_s`, closing a `Window` every `window_s`.

    Returns (windows, outcomes, seconds, hung, interrupted at): an interrupt (Ctrl-C) ends the current window
    early and stops the load, so that what was measured is still reported."""
    interrupted: float | None = None
    windows: list[Window] = []
    every: list[Outcome] = []
    start = time.monotonic()
    loop.set_target(concurrency)
    window_start = 0.0
    taken_at = 0.0  # when the previous window's outcomes were taken: this window's real start
    outcomes: list[Outcome] = []
    samples: list[TreeMemory] = []
    next_sample = 0.0
    index = 0
    while window_start < duration_s - 1e-6:
        window_end = min(window_start + window_s, duration_s)
        try:
            while True:
                now = time.monotonic() - start
                if sample is not None and now >= next_sample:
                    samples.append(sample())
                    next_sample = now + sample_s
                if now >= window_end:
                    break
                time.sleep(max(0.0, min(next_sample if sample else window_end, window_end) - now, 0.05))
        except KeyboardInterrupt:
            now = time.monotonic() - start
            interrupted = window_end = duration_s = now
        if window_end >= duration_s:
            loop.set_target(0)  # no new request after the last window; the ones in flight finish in it
        outcomes = loop.take()
        every.extend(outcomes)
        window = make_window(
            index,
            taken_at,
            now,
            window_start < warmup_s - 1e-6,
            outcomes,
            loop.overdue(time.monotonic()),
            samples if sample is not None else None,
        )
        windows.append(window)
        if on_window is not None:
            on_window(window, loop)
        samples = samples[-1:] if sample is not None else []
        window_start, taken_at = window_end, now
        index += 1
    hung = loop.drain()
    late = loop.take()
    every.extend(late)
    if late and windows:  # requests that were in flight when the last window closed
        last = windows[-1]
        windows[-1] = make_window(
            last.index,
            last.start_s,
            time.monotonic() - start,
            last.warmup,
            [*outcomes, *late],
            hung,
            samples if sample is not None else None,
        )
    return windows, every, time.monotonic() - start, hung, interrupted

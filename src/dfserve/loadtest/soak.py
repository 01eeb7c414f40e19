"""`dfserve soak`: a steady closed-loop load through the SDK for a long time, measured window by window, to
show that a server stays healthy: no failed request, memory flat after the warm-up, latency not drifting.

The load is the SDK's own `Client.classify` from `concurrency` threads, each sending its next request when
the previous one returns, cycling through real photographs (`dfserve.samples`, or a folder of files) to the
`detector` ensemble, or pixels to the engine (`mode="pixels"`). Without a concurrency, a short ramp
(1, 2, 4, ... threads) finds the knee with `dfserve.loadtest.knee`, the same arithmetic as Locust's step ramp,
and the soak runs there: the busiest load that still buys throughput, the load a server is sized for.

Every request is accounted for: it ends in a result or in an explicit error of the SDK (its timeout bounds
each call, retries included); one that is still running `timeout + HUNG_GRACE_S` after it was sent is
counted as hung, and so is one that returned that late. At the end, sent = ok + failed exactly.

Memory (`dfserve.loadtest.servermemory`) is sampled every `sample_s` from the server process's pid: the one
this command started (`repository`), or one the caller names (`pid`, with `url`); without a pid it is said
plainly that memory is not measured, and the verdict rests on the failures alone.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dfserve.loadtest.drift import Drift, drift
from dfserve.loadtest.errors import LoadtestError
from dfserve.loadtest.knee import StepFigures, find_knee, steps_past_knee
from dfserve.loadtest.servermemory import TreeMemory, sample_tree
from dfserve.loadtest.target import Mode

HUNG_GRACE_S = 5.0
"""How long past its timeout a request may take before it counts as hung (thread scheduling on a busy host)."""
RAMP_LEVELS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


class SoakError(LoadtestError):
    """A soak that cannot start or cannot be judged (bad options, an unreachable server)."""


@dataclass(frozen=True)
class Payload:
    name: str
    data: bytes


@dataclass(frozen=True)
class Outcome:
    """One finished request: when it ended, how long it took, and its error class (None: a result)."""

    done_at: float
    latency_s: float
    error: str | None = None
    message: str = ""


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None for none."""
    if not sorted_values:
        return None
    rank = min(max(1, math.ceil(fraction * len(sorted_values) - 1e-9)), len(sorted_values))
    return float(sorted_values[rank - 1])


class ClosedLoop:
    """`target` threads, each calling `call(payload)` in turn until told to stop; every outcome is kept."""

    def __init__(self, call: Callable[[bytes], object], payloads: Sequence[Payload], timeout_s: float) -> None:
        if not payloads:
            raise SoakError("no payloads to send")
        self._call = call
        self._payloads = list(payloads)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._next = itertools.count()
        self._outcomes: list[Outcome] = []
        self._in_flight: dict[int, float] = {}
        self._threads: list[threading.Thread] = []
        self._target = 0
        self.sent = 0

    @property
    def target(self) -> int:
        return self._target

    def set_target(self, users: int) -> None:
        """Run `users` threads (threads above it stop after their current request)."""
        self._target = users
        self._threads = [t for t in self._threads if t.is_alive()]
        running = {int(t.name.rsplit("-", 1)[1]) for t in self._threads}
        for index in range(users):
            if index not in running:
                thread = threading.Thread(target=self._run, args=(index,), name=f"dfserve-soak-{index}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _run(self, index: int) -> None:
        from dfserve.client import DfserveClientError

        while index < self._target:
            with self._lock:
                token = next(self._next)
                payload = self._payloads[token % len(self._payloads)]
                self.sent += 1
                started = time.monotonic()
                self._in_flight[token] = started
            error, message = None, ""
            try:
                self._call(payload.data)
            except DfserveClientError as exc:
                error, message = type(exc).__name__, f"{payload.name}: {exc}"
            except Exception as exc:  # not the SDK's contract, but still this request's answer: count it
                error, message = f"unexpected {type(exc).__name__}", f"{payload.name}: {exc}"
            done = time.monotonic()
            if error is None and done - started > self._timeout_s + HUNG_GRACE_S:
                error, message = "PastTimeout", f"{payload.name}: answered after {done - started:.1f}s"
            with self._lock:
                del self._in_flight[token]
                self._outcomes.append(Outcome(done, done - started, error, message[:300]))

    def take(self) -> list[Outcome]:
        """The outcomes finished since the last call."""
        with self._lock:
            out, self._outcomes = self._outcomes, []
        return out

    def overdue(self, now: float) -> int:
        """Requests in flight for longer than their timeout plus the grace: hung so far."""
        with self._lock:
            return sum(1 for t in self._in_flight.values() if now - t > self._timeout_s + HUNG_GRACE_S)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def drain(self) -> int:
        """Stop every thread and wait for its request (at most timeout + grace); how many are still hung."""
        self._target = 0
        deadline = time.monotonic() + self._timeout_s + HUNG_GRACE_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        return self.in_flight()


def step_figures(outcomes: Sequence[Outcome], users: int, duration_s: float) -> StepFigures:
    latencies = sorted(o.latency_s * 1000 for o in outcomes if o.error is None)
    return StepFigures(
        users=users,
        duration_s=round(duration_s, 3),
        requests=len(outcomes),
        failures=sum(1 for o in outcomes if o.error is not None),
        rps=len(latencies) / duration_s if duration_s > 0 else 0.0,
        p50_ms=percentile(latencies, 0.5) or 0.0,
        p90_ms=percentile(latencies, 0.9) or 0.0,
        p99_ms=percentile(latencies, 0.99) or 0.0,
    )


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


@dataclass
class SoakResult:
    options: dict[str, Any]
    target: dict[str, Any]
    concurrency: int
    ramp: list[StepFigures]
    knee: dict[str, Any] | None
    ramp_accounting: dict[str, Any] | None
    windows: list[Window]
    totals: Totals
    verdict: Verdict
    memory_start: dict[str, Any] | None
    memory_end: dict[str, Any] | None
    files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.verdict.passed,
            "options": self.options,
            "target": self.target,
            "concurrency": self.concurrency,
            "ramp": [s.as_dict() for s in self.ramp],
            "knee": self.knee,
            "ramp_accounting": self.ramp_accounting,
            "totals": asdict(self.totals),
            "verdict": self.verdict.as_dict(),
            "windows": [w.as_dict() for w in self.windows],
            "memory_start": self.memory_start,
            "memory_end": self.memory_end,
            "files": self.files,
        }


def find_concurrency(
    loop: ClosedLoop,
    step_s: float,
    max_users: int,
    on_step: Callable[[StepFigures], None] | None = None,
    settle_s: float = 2.0,
) -> tuple[int, list[StepFigures], dict[str, Any] | None, dict[str, Any]]:
    """A short step ramp through `RAMP_LEVELS` up to `max_users`; stops one step past the knee or at a failure.

    Returns the knee's concurrency (the last level when throughput was still growing), the steps, the knee, and
    the ramp's own accounting (every request it sent, settling and draining included)."""
    steps: list[StepFigures] = []
    seen: list[Outcome] = []
    sent_before = loop.sent
    for users in [u for u in RAMP_LEVELS if u <= max_users] or [max_users]:
        loop.set_target(users)
        time.sleep(settle_s)
        seen += loop.take()
        started = time.monotonic()
        time.sleep(step_s)
        measured = loop.take()
        seen += measured
        step = step_figures(measured, users, time.monotonic() - started)
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if step.failures or steps_past_knee(steps) >= 1:
            break
    hung = loop.drain()
    seen += loop.take()
    errors = Counter(o.error for o in seen if o.error is not None)
    if hung:
        errors["Hung"] += hung
    first_errors = [o.message for o in seen if o.error is not None][:5]
    accounting = {
        "sent": loop.sent - sent_before,
        "ok": sum(1 for o in seen if o.error is None),
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "first_errors": first_errors,
    }
    knee = find_knee(steps)
    if knee is None:
        raise SoakError(
            "the ramp found no throughput at all: every request failed; first errors: " + "; ".join(first_errors)
        )
    return knee.users, steps, knee.as_dict(), accounting


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


def photo_payloads(images: Path | None) -> list[Payload]:
    """Real photographs: a folder's image files, or the sample photographs shipped with dfserve."""
    if images is not None:
        from dfserve.loadtest.payloads import load_folder

        return [Payload(i.name, i.data) for i in load_folder(images)]
    from dfserve.samples import photos

    return [Payload(f"{name}.jpg", data) for name, data in photos()]


@dataclass
class SoakOptions:
    url: str | None = None
    """A running server; else `repository` is served by this command."""
    repository: Path | None = None
    pid: int | None = None
    """tritonserver's pid with `url`, for memory."""
    protocol: str | None = None
    mode: Mode = "file"
    concurrency: int | None = None
    """None: the knee of a short ramp."""
    duration_s: float = 600.0
    window_s: float = 15.0
    warmup: str = "10%"
    timeout_s: float = 30.0
    max_growth_pct: float = 5.0
    images: Path | None = None
    ramp_step_s: float = 10.0
    ramp_max: int = 32
    sample_s: float = 2.0
    tritonserver: str | None = None
    out: Path | None = None

    def validate(self) -> float:
        """The warm-up in seconds, once every option is checked."""
        from dfserve.loadtest.drift import parse_warmup

        if (self.url is None) == (self.repository is None):
            raise SoakError("give exactly one of --url (a running server) and --repository (serve it here)")
        if self.pid is not None and self.url is None:
            raise SoakError("--pid goes with --url; with --repository the soak knows its own server's pid")
        if self.concurrency is not None and self.concurrency < 1:
            raise SoakError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.window_s <= 0 or self.timeout_s <= 0 or self.sample_s <= 0 or self.ramp_step_s <= 0:
            raise SoakError("window, timeout, sample interval and ramp step must be positive")
        if self.max_growth_pct < 0:
            raise SoakError(f"--max-growth must be >= 0, got {self.max_growth_pct}")
        try:
            warmup_s = parse_warmup(self.warmup, self.duration_s)
        except ValueError as exc:
            raise SoakError(str(exc)) from exc
        measured = self.duration_s - warmup_s
        if measured < 2 * self.window_s - 1e-6:
            raise SoakError(
                f"after a {warmup_s:.0f}s warm-up, {self.duration_s:.0f}s leaves {measured:.0f}s: fewer than two "
                f"{self.window_s:g}s windows to compare; lengthen --duration or shorten --window/--warmup"
            )
        if self.pid is not None:
            from dfserve.loadtest.servermemory import sample_tree

            if not sample_tree(self.pid).alive:
                raise SoakError(f"no process with pid {self.pid} (--pid names tritonserver)")
        return warmup_s


class SoakHooks:
    """What a display does with progress; the default does nothing."""

    def started(self, result_so_far: dict[str, Any]) -> None: ...
    def ramp_step(self, step: StepFigures) -> None: ...
    def load_started(self, loop: ClosedLoop, concurrency: int) -> None: ...
    def window(self, window: Window, loop: ClosedLoop) -> None: ...
    def finished(self) -> None: ...


def run_soak(opts: SoakOptions, hooks: SoakHooks | None = None) -> SoakResult:
    """Run the soak (starting a server from `repository` when no `url` is given) and judge it."""
    hooks = hooks or SoakHooks()
    warmup_s = opts.validate()
    payloads = photo_payloads(opts.images)
    server = None
    if opts.repository is not None:
        from dfserve.triton.server import TritonServer

        server = TritonServer(opts.repository, http_port=0, grpc_port=0, metrics_port=0, tritonserver=opts.tritonserver)
        server.start()
    try:
        if server is not None:
            url = server.grpc_url if opts.protocol == "grpc" else server.http_url
            pid = server.pid
        else:
            assert opts.url is not None
            url, pid = opts.url, opts.pid
        return _soak(opts, hooks, warmup_s, payloads, url, pid, server is not None)
    finally:
        if server is not None:
            server.stop()


def _soak(
    opts: SoakOptions,
    hooks: SoakHooks,
    warmup_s: float,
    payloads: list[Payload],
    url: str,
    pid: int | None,
    own_server: bool,
) -> SoakResult:
    from dfserve.client import Client, DfserveClientError

    pool = max(opts.concurrency or opts.ramp_max, 1)
    protocol: Any = opts.protocol
    with Client(url, protocol, timeout=opts.timeout_s, mode=opts.mode, pool_size=pool) as client:
        try:
            spec = client.model_spec()
        except DfserveClientError as exc:
            raise SoakError(f"cannot read the served model from {url}: {exc}") from exc
        model = spec.models.engine if opts.mode == "pixels" else spec.models.ensemble
        target = {
            "url": client.url,
            "protocol": client.protocol,
            "mode": opts.mode,
            "model": model,
            "pid": pid,
            "own_server": own_server,
            "payloads": [p.name for p in payloads],
        }
        sample = (lambda: sample_tree(pid)) if pid is not None else None
        memory_start = sample().as_dict() if sample else None
        hooks.started({"target": target, "warmup_s": warmup_s, "duration_s": opts.duration_s})
        loop = ClosedLoop(lambda data: client.classify(data, timeout=opts.timeout_s), payloads, opts.timeout_s)
        ramp: list[StepFigures] = []
        knee = None
        if opts.concurrency is None:
            concurrency, ramp, knee, ramp_accounting = find_concurrency(
                loop, opts.ramp_step_s, opts.ramp_max, hooks.ramp_step
            )
        else:
            concurrency, ramp_accounting = opts.concurrency, None
        loop.sent = 0
        hooks.load_started(loop, concurrency)
        windows, outcomes, seconds, hung, interrupted = run_windows(
            loop,
            concurrency=concurrency,
            duration_s=opts.duration_s,
            window_s=opts.window_s,
            warmup_s=warmup_s,
            sample=sample,
            sample_s=opts.sample_s,
            on_window=hooks.window,
        )
        memory_end = sample().as_dict() if sample else None
    total = totals(windows, outcomes, loop.sent, hung, seconds)
    verdict = judge(
        windows,
        total,
        opts.max_growth_pct,
        memory_measured=pid is not None,
        ramp_failed=ramp_accounting["failed"] if ramp_accounting else 0,
        interrupted_at=interrupted,
    )
    hooks.finished()
    options = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k not in ("out", "tritonserver")
    }
    options["warmup_s"] = warmup_s
    return SoakResult(
        options, target, concurrency, ramp, knee, ramp_accounting, windows, total, verdict, memory_start, memory_end
    )

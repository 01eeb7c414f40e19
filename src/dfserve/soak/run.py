"""`dfserve soak`: a steady closed-loop load through the SDK for a long time, measured window by window, to
show that a server stays healthy: no failed request, memory flat after the warm-up, latency not drifting.

The load is the SDK's own `Client.classify` from `concurrency` threads, each sending its next request when
the previous one returns, cycling through real photographs (`dfserve.samples`, or a folder of files) to the
`detector` ensemble, or pixels to the engine (`mode="pixels"`). Without a concurrency, a short ramp
(1, 2, 4, ... threads) finds the knee with `dfserve.measure.knee`, the same arithmetic as Locust's step ramp,
and the soak runs there: the busiest load that still buys throughput, the load a server is sized for.

Every request is accounted for (`dfserve.measure.closedloop`): at the end, sent = ok + failed exactly.
Every error counts as a failure, a refused file (HTTP 400) included: the soak sends only files meant to be
classified (real photographs), so a refusal is the server going wrong, not a hostile input handled well;
hostile files belong to the reliability suite, where refusing them is the expected answer.
Windows, totals and the verdict are in `dfserve.soak.windows`.

Memory (`dfserve.measure.processes`) is sampled every `sample_s` from the server process's pid: the one
this command started (`repository`), or one the caller names (`pid`, with `url`); without a pid it is said
plainly that memory is not measured, and the verdict rests on the failures alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dfserve.client import Client, DfserveClientError
from dfserve.errors import SoakError
from dfserve.measure.closedloop import ClosedLoop, find_concurrency
from dfserve.measure.knee import StepFigures
from dfserve.measure.payloads import EncodedImage, describe_images, encoded, load_folder
from dfserve.measure.processes import sample_tree
from dfserve.samples import photos
from dfserve.soak.drift import parse_warmup
from dfserve.soak.windows import Totals, Verdict, Window, judge, run_windows, totals
from dfserve.spec.names import Mode
from dfserve.triton.process import TritonServer

__all__ = ["SoakError", "SoakHooks", "SoakOptions", "SoakResult", "run_soak"]


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


def photo_payloads(images: Path | None) -> list[EncodedImage]:
    """Real photographs: a folder's image files, or the sample photographs shipped with dfserve."""
    if images is not None:
        return load_folder(images)
    return [encoded(f"{name}.jpg", data) for name, data in photos()]


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
        if self.pid is not None and not sample_tree(self.pid).alive:
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
    payloads: list[EncodedImage],
    url: str,
    pid: int | None,
    own_server: bool,
) -> SoakResult:

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
            "images": describe_images(
                payloads, f"images from {opts.images}" if opts.images else "sample photographs shipped with dfserve"
            ),
        }
        sample = (lambda: sample_tree(pid)) if pid is not None else None
        memory_start = sample().as_dict() if sample else None
        hooks.started({"target": target, "warmup_s": warmup_s, "duration_s": opts.duration_s})
        loop = ClosedLoop(lambda image: client.classify(image.data, timeout=opts.timeout_s), payloads, opts.timeout_s)
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

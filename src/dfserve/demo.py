"""`dfserve demo` (`make demo`): the whole stack once, on this machine, in a few minutes.

Builds the default detector (falling back, loudly, to its architecture with random weights when the hub is out
of reach), serves the repository with a real Triton server, classifies sample photographs through it with the
SDK over HTTP and gRPC, measures throughput, and ends with a short Locust load test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.panel import Panel
from rich.table import Table

from dfserve.commandline import RawDescriptionHelpFormatter, checked, deprecated_alias
from dfserve.errors import CheckpointError
from dfserve.export.policy import DEFAULT_MODEL_ID
from dfserve.measure.stats import parse_duration
from dfserve.samples import photos
from dfserve.spec.model import REPORT_FILENAME, SPEC_FILENAME
from dfserve.terminal import console as make_console
from dfserve.terminal import heading

console = make_console()


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="build, serve, classify sample photographs and load-test, end to end",
        description=__doc__,
        formatter_class=RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=DEFAULT_MODEL_ID, help="hub id or local checkpoint folder")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("demo-out"),
        metavar="DIR",
        help="working folder, the same on every run so that a finished build is reused (default: ./%(default)s)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the folder holds a finished build")
    p.add_argument(
        "--loadtest-duration",
        type=checked(_duration_or_off, "duration"),
        default=20.0,
        metavar="DURATION",
        help="length of the closing load test: 20s, 1m, or 0 to skip it (default: 20s)",
    )
    deprecated_alias(p, "--loadtest-seconds", new="--loadtest-duration")
    p.set_defaults(func=run)


def _duration_or_off(text: str) -> float:
    """The shared duration syntax (`dfserve.measure.stats.parse_duration`), or 0 to skip."""
    return 0.0 if text.strip() in ("0", "0s") else parse_duration(text)


def write_sample_photos(folder: Path) -> list[Path]:
    """Real photographs that ship with dfserve: nothing is downloaded at run time."""

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in photos():
        path = folder / f"{name}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _build(model: str, repo: Path, rebuild: bool) -> dict[str, Any]:
    import json

    from dfserve.export.pipeline import BuildOptions, build

    report_path = repo / REPORT_FILENAME
    if not rebuild and report_path.is_file() and (repo / SPEC_FILENAME).is_file():
        report: dict[str, Any] = json.loads(report_path.read_text())
        if report.get("source") == model:
            console.print(f"[dim]reusing the build in {repo} (--rebuild to redo it)[/]")
            return report
    try:
        return build(BuildOptions(out=repo, model=model)).report
    except CheckpointError as exc:
        if "--random-weights" not in str(exc):
            raise
        console.print(
            f"[bold red]{exc}[/]\n[bold]-> building the same architecture with random weights[/]", highlight=False
        )
        return build(BuildOptions(out=repo, model=model, random_weights=True)).report


def _random_weights_banner() -> None:
    console.print(
        Panel(
            "This build has the detector's ARCHITECTURE WITH RANDOM WEIGHTS (the trained weights were out of "
            "reach). Everything below runs for real, but the scores mean nothing: it shows the stack and its "
            "speed, not the detector's verdicts. Run `dfserve demo --model DIR` with the real checkpoint for those.",
            title="[bold]NO TRAINED WEIGHTS[/]",
            border_style="bold red",
            expand=console.is_terminal,  # piped: as wide as its text, not ten thousand columns
        )
    )


def run(args: argparse.Namespace) -> int:
    from dfserve.client import Client
    from dfserve.triton.process import TritonServer

    out: Path = args.out
    repo = out / "repository"
    heading(console, "[bold]1. build")
    report = _build(args.model, repo, args.rebuild)
    if report["random_weights"]:
        _random_weights_banner()
    parity = report["parity"]
    console.print(
        f"parity with the Transformers pipeline: max |Δscore| {parity['max_abs_diff']:.1e}, "
        f"top-1 agreement {parity['top1_agreement']:.0%} on {parity['images']} images"
    )

    heading(console, "[bold]2. serve")
    photos = write_sample_photos(out / "photos")
    started = time.perf_counter()
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
        console.print(
            f"tritonserver ready in {time.perf_counter() - started:.1f} s: HTTP {server.http_url}, "
            f"gRPC {server.grpc_url}, metrics http://{server.metrics_url}/metrics"
        )

        heading(console, "[bold]3. classify sample photographs through the served ensemble")
        with Client(server.http_url, protocol="http") as client:
            labels = client.model_spec().labels
            shown = labels.positive or labels.names[0]
            table = Table("photo", "label", f"P({shown})", "latency ms")
            for path in photos:
                t0 = time.perf_counter()
                pred = client.classify(path)
                ms = (time.perf_counter() - t0) * 1000
                table.add_row(path.name, pred.label, f"{pred.scores[shown]:.4f}", f"{ms:.1f}")
            console.print(table)
            if pred.random_weights:
                console.print("[bold red]random weights:[/] these labels are meaningless (see the banner above)")
            http_rate = _throughput(client, photos, "HTTP, encoded files")
        with Client(server.grpc_url, protocol="grpc", mode="pixels") as client:
            grpc_rate = _throughput(client, photos, "gRPC, pixels preprocessed here")

        loadtest: dict[str, Any] | None = None
        if args.loadtest_duration > 0:
            seconds = max(1, round(args.loadtest_duration))
            heading(console, f"[bold]4. load test ({seconds} s, Locust)")
            loadtest = _loadtest(server, out, seconds)

        heading(console, "[bold]5. verify: the live server against the reference pipeline")
        verified = _verify(server, report)
    heading(console, "[bold green]done" if verified else "[bold red]done, NOT verified")
    console.print(
        summary_line(report, len(photos), http_rate, grpc_rate, loadtest, verified, repo),
        highlight=False,
        soft_wrap=True,  # one line however narrow the terminal, for a reader and for grep
    )
    return 0 if verified else 1


def summary_line(
    report: dict[str, Any],
    photo_count: int,
    http_rate: float,
    grpc_rate: float,
    loadtest: dict[str, Any] | None,
    verified: bool,
    repo: Path,
) -> str:
    """The demo's last line: what ran, how fast, whether it matched the reference, and what to run next."""
    weights = "random weights" if report["random_weights"] else "trained weights"
    parts = [
        f"{report['source']} ({weights}) served from {repo}",
        f"{photo_count} photos classified",
        f"{http_rate:.1f} images/s over HTTP, {grpc_rate:.1f} over gRPC",
    ]
    if loadtest is not None:
        p99 = loadtest.get("p99_ms")
        parts.append(
            f"load test {loadtest['rps']:.1f} req/s"
            + (f", p99 {p99:.0f} ms" if p99 is not None else "")
            + f", {loadtest['failures']} failed"
        )
    parts.append("verified against the reference pipeline" if verified else "NOT verified against the reference")
    return "summary: " + "; ".join(parts) + f". Serve it yourself: dfserve serve --repository {repo}"


def _verify(server: Any, report: dict[str, Any]) -> bool:
    """What `dfserve verify` does after a rollout, run on the demo's own server."""
    from dfserve.quality.verify import print_verification, verify

    result = verify(server.http_url, report["source"], random_weights=bool(report["random_weights"]))
    print_verification(result, console)
    return result.passed


def _throughput(client: Any, photos: list[Path], what: str, rounds: int = 6, concurrency: int = 8) -> float:
    items = photos * rounds
    t0 = time.perf_counter()
    results = client.classify_many(items, concurrency=concurrency)
    took = time.perf_counter() - t0
    failed = sum(1 for r in results if isinstance(r, Exception))
    console.print(
        f"{what}: {len(items)} images in {took:.1f} s = [bold]{len(items) / took:.1f} images/s[/] "
        f"at concurrency {concurrency}" + (f", [red]{failed} failed[/]" if failed else ", 0 failed")
    )
    return len(items) / took


def _loadtest(server: Any, out: Path, seconds: int) -> dict[str, Any]:
    from dfserve.loadtest.cli import print_summary
    from dfserve.loadtest.runner import LoadtestOptions, run_loadtest

    options = LoadtestOptions(
        host=server.http_url, users=4, spawn_rate=4, run_time=f"{seconds}s", out=out / "loadtest", echo=False
    )
    summary = run_loadtest(options, console=console)
    print_summary(summary, console)
    return summary

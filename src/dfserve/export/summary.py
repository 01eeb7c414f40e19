"""What a build prints and records about itself beside its stages: the versions it ran with, the fidelity lines,
the modes table (every resize mode, and the GPU decode path, against the reference it names), the build host.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from rich.console import Console
from rich.table import Table

from dfserve.engine.cpu import HostCpu
from dfserve.export.policy import DECODE_GPU_BAR

VERSIONED_PACKAGES = ("dfserve", "torch", "transformers", "timm", "torchvision", "onnx", "onnxruntime", "pillow")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def print_fidelity(console: Console, precision: str, report: dict[str, Any]) -> None:
    vs_ref = report["vs_reference"]
    console.print(
        f"  {precision.upper()} against the pipeline: max |Δscore| {vs_ref['max_abs_diff']:.2e} (bar "
        f"{report['bar']['max_abs_diff']:g}), {vs_ref['flips']} flip(s) of {vs_ref['images']}; "
        f"against FP32: {report['vs_fp32']['max_abs_diff']:.2e}"
    )


def host_report(host: HostCpu | None) -> dict[str, Any] | None:
    if host is None:
        return None
    return {"cpu_model": host.model, "arch": host.arch, "isa": sorted(host.isa), "cores": host.cores, "cpus": host.cpus}


def modes_table(
    modes: dict[str, dict[str, Any]],
    chosen: str,
    decode: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
) -> Table:
    """What each resize mode (and, for `--decode gpu`, the GPU decode path, against its own bar) costs on this
    checkpoint: the numbers behind choosing `box`, `draft` or GPU decoding, against the reference named in the
    title (library, processor class, backend)."""
    ref = reference or {}
    against = f"{ref.get('library', 'the reference')} {ref.get('processor', '')} (backend {ref.get('backend', '?')})"
    table = Table(title=f"resize modes against {against}", title_justify="left", box=None)
    if decode is not None:
        modes = {**modes, f"{DECODE_GPU_BAR} ({decode['device']}; bar {decode['bar']['max_abs_diff']:g})": decode}
    for column in ("mode", "max |Δscore|", "mean |Δscore|", "flips", "bar"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, m in modes.items():
        table.add_row(
            f"{mode}{' (chosen)' if mode == chosen else ''}",
            f"{m['max_abs_diff']:.2e}",
            f"{m['mean_abs_diff']:.2e}",
            str(m["flips"]),
            "[green]passes[/]" if m["passes"] else "[red]fails[/]",
        )
    return table

"""What a reduced precision buys on the build host: its served graph against the FP32 graph, measured here, and
the choice `--precision auto` makes from that measurement.

The measurement runs both graphs as the server does (ONNX Runtime's CPU provider, the spec's intra-op threads,
spinning off) at batch 1 and at the served max batch, alternating in rounds so that other load on the machine
hits both alike, for a bounded time (`seconds` per graph, batch and round). It is recorded in build_report.json
and, compactly, in the spec (`ModelSpec.build_host`), with the CPU's model and instruction sets, because the
same INT8 graph served 1.88x FP32 on an AVX-512 VNNI CPU and 1.01x on an AVX2 one.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from dfserve.engine.cpu import HostCpu, describe_isa
from dfserve.export.policy import MIN_SPEEDUP
from dfserve.spec.model import ModelSpec, Precision

AUTO_CANDIDATES: tuple[Precision, ...] = ("fp32", "int8")
"""What `--precision auto` builds and measures on a CPU. FP16 is not a candidate: ONNX Runtime's CPU provider lacks
FP16 kernels for most of a ViT's operators and casts around them (`dfserve.export.policy.CPU_BATCHING`: "slow on
CPUs"); its graph is built for GPUs."""


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the server runs it
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def served_batches(spec: ModelSpec) -> tuple[int, ...]:
    """Batch 1 (a lone request) and the served max batch."""
    return tuple(sorted({1, spec.batching.max_batch_size}))


def measure(
    graphs: dict[str, Path],
    spec: ModelSpec,
    pixels: np.ndarray,
    *,
    seconds: float,
    rounds: int = 2,
    batches: tuple[int, ...] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Images/s of every graph at every batch (median over `rounds` alternating rounds) and each graph's ratio
    to `fp32`. At least one run per graph, batch and round, however short `seconds` is."""

    if "fp32" not in graphs:
        raise ValueError("the speed measurement compares with the FP32 graph, which is missing")
    batches = batches or served_batches(spec)
    threads = spec.batching.engine_threads if threads is None else threads
    sessions = {name: _session(path, threads) for name, path in graphs.items()}
    rates: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in graphs}
    for batch in batches:
        feed = {spec.tensors.pixels: np.resize(pixels, (batch, *pixels.shape[1:]))}
        for session in sessions.values():
            session.run(None, feed)  # warm-up, outside the window
        for r in range(rounds):
            order = list(sessions)
            order = order[r % len(order) :] + order[: r % len(order)]  # who goes first alternates
            for name in order:
                start, done = time.perf_counter(), 0
                while True:
                    sessions[name].run(None, feed)
                    done += batch
                    if time.perf_counter() - start >= seconds:
                        break
                rates[name][batch].append(done / (time.perf_counter() - start))
    images_per_s = {name: {b: statistics.median(v) for b, v in per.items()} for name, per in rates.items()}
    over_fp32 = {
        name: {b: images_per_s[name][b] / images_per_s["fp32"][b] for b in batches} for name in graphs if name != "fp32"
    }
    return {
        "batches": list(batches),
        "threads": threads,
        "seconds": seconds,
        "rounds": rounds,
        "images_per_s": {name: {str(b): round(v, 3) for b, v in per.items()} for name, per in images_per_s.items()},
        "over_fp32": {name: {str(b): round(v, 3) for b, v in per.items()} for name, per in over_fp32.items()},
    }


def measured_record(speed: dict[str, Any]) -> dict[str, float]:
    """The spec's compact form: `int8_over_fp32` at batch 1, `int8_over_fp32_batch8` at a larger served batch."""
    out: dict[str, float] = {}
    for name, per in speed["over_fp32"].items():
        for batch, ratio in per.items():
            out[f"{name}_over_fp32" if batch == "1" else f"{name}_over_fp32_batch{batch}"] = ratio
    return out


def no_gain_line(precision: str, speed: dict[str, Any], host: HostCpu) -> str | None:
    """One line when `precision` is less than `MIN_SPEEDUP` times FP32 at every measured batch on this host."""
    per = speed["over_fp32"].get(precision, {})
    if not per or max(per.values()) >= MIN_SPEEDUP:
        return None
    figures = ", ".join(f"{r:.2f}x at batch {b}" for b, r in per.items())
    return (
        f"{precision.upper()} buys no speed on this CPU ({host.model}; {precision.upper()} instructions: "
        f"{describe_isa(host.accelerates(precision))}): images/s over FP32 {figures} (< {MIN_SPEEDUP}x), so its "
        "drift buys nothing here; serve FP32 (--precision fp32) unless it serves on another CPU"
    )


@dataclass(frozen=True)
class Choice:
    precision: Precision
    reason: str


def choose(host: HostCpu, speed: dict[str, Any] | None, failed: dict[str, str]) -> Choice:
    """`--precision auto`'s pick: the fastest candidate that passed its fidelity bar and is at least `MIN_SPEEDUP`
    times FP32 at batch 1 (what the CPU defaults serve) on this host, and only where the CPU has the instructions
    that precision needs (without them a small measured gain is noise: 1.01-1.04x on AVX2). Else FP32.

    `speed`: `measure`'s result for the candidates that passed; `failed`: precision -> why it failed its bar."""

    reasons: list[str] = [f"{p.upper()} failed its fidelity bar ({why})" for p, why in failed.items()]
    best: tuple[float, str] | None = None
    for precision, per in (speed or {}).get("over_fp32", {}).items():
        ratio = float(per["1"])
        isa = host.accelerates(precision)
        if not isa:
            reasons.append(
                f"this CPU ({host.model}) has no {precision.upper()} instructions (VNNI, AMX or ARM dot products), "
                f"{precision.upper()} measured {ratio:.2f}x FP32"
            )
        elif ratio < MIN_SPEEDUP:
            reasons.append(
                f"{precision.upper()} measured {ratio:.2f}x FP32 (< {MIN_SPEEDUP}x) with {describe_isa(isa)}"
            )
        elif best is None or ratio > best[0]:
            best = (ratio, precision)
    if best is not None:
        ratio, precision = best
        return Choice(
            cast(Precision, precision),
            f"{precision.upper()}: {ratio:.2f}x FP32 at batch 1 on this CPU ({host.model}, "
            f"{describe_isa(host.accelerates(precision))}) and within its fidelity bar",
        )
    return Choice("fp32", "FP32: " + ("; ".join(reasons) or "no reduced precision was measured"))

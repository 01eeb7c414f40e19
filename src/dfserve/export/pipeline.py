"""`dfserve build`: checkpoint -> ONNX -> (TensorRT) -> Triton model repository, with proof.

Stages run in order and each is timed: resolve the checkpoint, load it, export and compose the ONNX graph,
prove parity against the Transformers pipeline, (build the TensorRT engine and prove FP16 parity), write the
repository. The report (`build_report.json`) records the figures, the versions and whether the weights are
random, so that nothing downstream can mistake a throughput build for a real detector.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rich.console import Console
from rich.table import Table

from dfserve.engine import torch_module as torch_engine
from dfserve.engine.tensorrt import require_tensorrt, run_engine
from dfserve.errors import BuildError, ParityError
from dfserve.export import checkpoint as ckpt_mod
from dfserve.export import tensorrt as trt_mod
from dfserve.export.fidelity import bar_for, compare
from dfserve.export.parity import (
    TOLERANCE,
    check_parity,
    onnx_scores,
    parity_pixels,
    parity_steps,
    reference_scores,
    write_parity_images,
)
from dfserve.export.policy import DEFAULT_MODEL_ID, default_batching
from dfserve.export.precision import convert
from dfserve.repository.configs import Target
from dfserve.repository.writer import check_writable, write_repository
from dfserve.spec.model import (
    DEFAULT_RESIZE_MODE,
    REPORT_FILENAME,
    RESIZE_MODES,
    Batching,
    Engine,
    GpuServing,
    Limits,
    ModelSpec,
    Precision,
    ResizeMode,
)
from dfserve.spec.names import BUILD_MARKER_FILENAME, ONNX_FILENAME
from dfserve.terminal import console as make_console
from dfserve.terminal import progress

log = logging.getLogger(__name__)

PARITY_PROGRESS = f"parity (each image through the Transformers pipeline, then {len(RESIZE_MODES)} resize modes)"

VERSIONED_PACKAGES = ("dfserve", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "pillow")


@dataclass
class BuildOptions:
    out: Path
    model: str = DEFAULT_MODEL_ID
    revision: str | None = None
    random_weights: bool = False
    negative_label: str | None = None
    positive_label: str | None = None
    target: Target = "python"
    precision: Precision | None = None
    """None: the engine's natural precision (FP16 for TensorRT, FP32 for ONNX Runtime and torch)."""
    engine: Literal["onnx", "torch"] = "onnx"
    """torch: PyTorch runs `vit` in the Python backend (in `precision`), instead of an ONNX graph."""
    batching: Batching | None = None
    """None: `dfserve.export.policy.default_batching` for the engine and precision (CPU-tuned for ONNX Runtime)."""
    batching_overrides: dict[str, Any] = field(default_factory=dict)
    """`Batching` fields set on top of `batching` (the command line's explicit flags)."""
    gpu: GpuServing = field(default_factory=GpuServing)
    """How the `tensorrt` target serves `vit` (instances, CUDA graphs, optimisation level): folded into `batching`
    for that target by `GpuServing.for_gpu`; the other targets ignore it."""
    limits: Limits = field(default_factory=Limits)
    resize_mode: ResizeMode = DEFAULT_RESIZE_MODE
    opset: int = ModelSpec.model_fields["onnx_opset"].default
    parity_photos: int = 8
    tolerance: float = TOLERANCE
    allow_unfused_attention: bool = False
    """TensorRT only: serve an FP16 engine whose attention was not fused (with a loud warning) instead of failing."""
    seed: int = 0


@dataclass
class BuildResult:
    spec: ModelSpec
    out_dir: Path
    onnx_path: Path
    report: dict[str, Any]


# The build's outcome (what was built, where its report is) is its result: stdout. Stages and notes: stderr.
result_console = make_console()


class _Stages:
    """Prints each stage as it starts and finishes, with its duration, and keeps the timings."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, key: str, title: str, *, spinner: bool = True) -> Iterator[None]:
        """A spinner on a terminal (`spinner=False` where the stage draws its own progress bar), a plain line
        at the start otherwise; the start and end are logged at INFO either way."""
        start = time.perf_counter()
        log.info("build stage %s: started", key)
        if not self.console.is_terminal:
            self.console.print(f"  {title} ...", markup=False, highlight=False)
        with self.console.status(f"[bold]{title}[/] ...") if spinner else nullcontext():
            yield
        took = time.perf_counter() - start
        self.timings[key] = round(took, 3)
        log.info("build stage %s: done in %.1f s", key, took)
        self.console.print(f"  [green]✓[/] {title} [dim]({took:.1f} s)[/]")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _quiet_libraries() -> None:
    """The exporters' tracer warnings and advice would bury the build's own progress; -v shows them."""
    if log.isEnabledFor(logging.DEBUG):
        return
    warnings.filterwarnings("ignore", module=r"(torch|transformers|optimum)(\.|$)")
    warnings.filterwarnings("ignore", message=r".*(TracerWarning|slow image processor|use_fast).*")
    for name in ("transformers", "optimum", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def build(options: BuildOptions, console: Console | None = None) -> BuildResult:
    """Run every stage; raises a `BuildError` subclass naming the problem on failure."""
    console = console or make_console(stderr=True)
    out = Path(options.out)
    check_writable(out)
    marker = out / BUILD_MARKER_FILENAME
    # Marked from the start: a deployment waiting for this build must not take an older report for its end.
    marker.write_text(f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    try:
        result = _build(options, console, out)
    except BaseException:
        # The write stage removes the old report first: while it is there, the old repository is untouched.
        if (out / REPORT_FILENAME).exists():
            marker.unlink(missing_ok=True)
        raise
    marker.unlink(missing_ok=True)
    return result


def _build(options: BuildOptions, console: Console, out: Path) -> BuildResult:
    _quiet_libraries()
    stages = _Stages(console)
    if options.target == "tensorrt":  # before minutes of export, not after
        require_tensorrt()
    started = time.perf_counter()
    console.print(f"[bold]dfserve build[/] {options.model} -> {out} (target {options.target})")

    with stages.stage("resolve", "checkpoint located and checked"):
        ckpt = ckpt_mod.resolve(options.model, revision=options.revision, random_weights=options.random_weights)
        spec = ModelSpec(
            source=options.model,
            revision=options.revision,
            architecture=ckpt.architecture,
            random_weights=options.random_weights,
            labels=ckpt_mod.labels_for(ckpt, negative=options.negative_label, positive=options.positive_label),
            preprocessing=ckpt_mod.preprocessing_for(ckpt),
            batching=resolve_batching(options),
            limits=options.limits,
            onnx_opset=options.opset,
            resize_mode=options.resize_mode,
            engine="tensorrt" if options.target == "tensorrt" else "onnx",
            precision=_precision(options),
        )
        if options.engine == "torch":
            if spec.precision == "int8":
                raise BuildError("--precision int8 is for the ONNX Runtime targets; the torch engine runs fp32 or fp16")
            spec = spec.model_copy(update={"engine": "torch"})
    if spec.random_weights:
        console.print(
            "[bold yellow]RANDOM WEIGHTS[/]: this build has the architecture but not the trained weights; "
            "its scores mean nothing (use it for throughput work only)"
        )
    console.print(
        f"  {spec.architecture}, input {spec.input_hw[0]}x{spec.input_hw[1]}, labels {list(spec.labels.names)} "
        f"({spec.labels.activation}), preprocessing {spec.preprocessing.resize} "
        f"{spec.preprocessing.resample_name}"
    )

    with tempfile.TemporaryDirectory(prefix="dfserve-build-") as tmp_name:
        tmp = Path(tmp_name)
        with stages.stage("load", "model loaded"):
            model = ckpt_mod.load_model(ckpt, seed=options.seed)
        if options.engine == "torch":
            return _torch_build(stages, ckpt, model, spec, tmp, options, out, started)

        from dfserve.export.onnx_graph import export_onnx  # onnx and optimum: not needed by the torch engine

        onnx_tmp = tmp / ONNX_FILENAME
        with stages.stage("export", f"ONNX exported and composed (opset {spec.onnx_opset})"):
            export_onnx(model, spec, onnx_tmp, core_path=tmp / "classifier.onnx")
        onnx_bytes = onnx_tmp.stat().st_size

        with stages.stage("parity", "parity with the Transformers pipeline proven", spinner=False):
            images = write_parity_images(tmp / "parity", photos=options.parity_photos, seed=options.seed)
            with progress(PARITY_PROGRESS, parity_steps(images), unit="image passes", out=console) as bar:
                parity = check_parity(
                    ckpt,
                    model,
                    spec,
                    onnx_tmp,
                    images,
                    tolerance=options.tolerance,
                    mode=spec.resize_mode,
                    advance=bar.advance,
                )
        console.print(
            f"  max |Δscore| {parity.max_abs_diff:.2e} (bar {parity.tolerance:g}), "
            f"decision agreement {parity.top1_agreement:.1%} on {parity.images} images"
        )
        console.print(_modes_table(parity.modes, spec.resize_mode))

        served_onnx, precision_report = onnx_tmp, None
        # The tensorrt target too: TensorRT builds the proven FP16 graph itself (strongly typed), see `_tensorrt_stage`.
        if spec.precision != "fp32":
            served_onnx = tmp / f"model.{spec.precision}.onnx"
            with stages.stage(spec.precision, f"{spec.precision.upper()} graph built and its fidelity proven"):
                precision_report = _reduced_precision(
                    spec, onnx_tmp, tmp / "classifier.onnx", served_onnx, images, parity.reference
                )
            vs_ref = precision_report["vs_reference"]
            console.print(
                f"  {spec.precision.upper()} against the pipeline: max |Δscore| {vs_ref['max_abs_diff']:.2e} (bar "
                f"{precision_report['bar']['max_abs_diff']:g}), {vs_ref['flips']} flip(s) of {vs_ref['images']}; "
                f"against FP32: {precision_report['vs_fp32']['max_abs_diff']:.2e}"
            )
            onnx_bytes = served_onnx.stat().st_size

        engine_report: dict[str, Any] | None = None
        plan_path: Path | None = None
        if options.target == "tensorrt":
            plan_path, engine_report = _tensorrt_stage(stages, spec, onnx_tmp, served_onnx, tmp, images, options)

        with stages.stage("write", "model repository written"):
            (out / REPORT_FILENAME).unlink(missing_ok=True)
            write_repository(
                spec, out, target=options.target, onnx_path=served_onnx, plan_path=plan_path, gpu=options.gpu
            )

    report: dict[str, Any] = {
        "source": spec.source,
        "revision": spec.revision,
        "architecture": spec.architecture,
        "random_weights": spec.random_weights,
        "from_preset": ckpt.from_preset,
        "target": options.target,
        "labels": list(spec.labels.names),
        "activation": spec.labels.activation,
        "input_hw": list(spec.input_hw),
        "onnx_bytes": onnx_bytes,
        "parity": parity.as_report(),
        "precision": {"served": spec.precision, **(precision_report or {})},
        "engine": engine_report,
        "versions": _versions(),
        "timings_s": {**stages.timings, "total": round(time.perf_counter() - started, 3)},
    }
    (out / REPORT_FILENAME).write_text(json.dumps(report, indent=2) + "\n")
    result_console.print(
        f"[bold green]built[/] {out} in {report['timings_s']['total']:.1f} s "
        f"(ONNX {onnx_bytes / 2**20:.1f} MiB); report: {out / REPORT_FILENAME}"
    )
    return BuildResult(spec=spec, out_dir=out, onnx_path=out / spec.models.engine / "1" / ONNX_FILENAME, report=report)


def resolve_batching(options: BuildOptions) -> Batching:
    """The one place where the defaults follow the spec's engine and precision."""
    engine: Engine = "tensorrt" if options.target == "tensorrt" else options.engine
    base = options.batching or default_batching(engine, _precision(options))
    if options.batching_overrides:
        base = Batching.model_validate({**base.model_dump(), **options.batching_overrides})
    return options.gpu.for_gpu(base) if options.target == "tensorrt" else base


def _precision(options: BuildOptions) -> Precision:
    if options.precision is None:
        return "fp16" if options.target == "tensorrt" else "fp32"
    if options.precision == "int8" and options.target == "tensorrt":
        raise BuildError("--precision int8 is for the ONNX Runtime targets (python, container), not TensorRT")
    return options.precision


def _reduced_precision(
    spec: ModelSpec, fp32_path: Path, core_path: Path, out: Path, images: list[Path], reference: np.ndarray
) -> dict[str, Any]:
    """Convert the FP32 graph and hold the result to its precision's bar against the reference pipeline, on the
    parity set; the drift against the FP32 graph is reported beside it. Fails closed."""

    convert(fp32_path, core_path, spec, out)
    pixels = parity_pixels(spec, images, spec.resize_mode)
    names = [p.name for p in images]
    fp32 = onnx_scores(fp32_path, spec, pixels)
    reduced = onnx_scores(out, spec, pixels)
    vs_ref = compare(reference, reduced, spec.labels, names)
    vs_fp32 = compare(fp32, reduced, spec.labels, names)
    bar = bar_for(spec.precision)
    problems = vs_ref.problems(bar)
    if problems:
        raise ParityError(
            f"the {spec.precision.upper()} graph is too far from the Transformers pipeline: {'; '.join(problems)} "
            "(build FP32 instead, or report the checkpoint)"
        )
    return {
        "bar": {"max_abs_diff": bar.max_abs_diff, "min_agreement": bar.min_agreement},
        "vs_reference": vs_ref.as_report(),
        "vs_fp32": vs_fp32.as_report(),
        "onnx_bytes": out.stat().st_size,
    }


def _modes_table(modes: dict[str, dict[str, Any]], chosen: str) -> Table:
    """What each resize mode costs on this checkpoint: the numbers behind choosing `box` or `draft`."""
    table = Table(title="resize modes against the Transformers pipeline", title_justify="left", box=None)
    for column in ("mode", "max |Δscore|", "mean |Δscore|", "flips", "FP32 bar"):
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


def _tensorrt_stage(
    stages: _Stages,
    spec: ModelSpec,
    fp32_onnx: Path,
    served_onnx: Path,
    tmp: Path,
    images: list[Path],
    options: BuildOptions,
) -> tuple[Path, dict[str, Any]]:
    """The TensorRT engine, built strongly typed from `served_onnx` (the FP16 graph proven by the previous stage, or
    the FP32 graph), then gated against the FP32 ONNX graph with the FP16 bar; its drift from the graph it was built
    from is reported beside it. Runs only on a GPU host with TensorRT; elsewhere `require_tensorrt` stops the build
    with one line before any work."""

    trt_mod.require_tensorrt()
    precision = "fp16" if spec.precision == "fp16" else "fp32"
    engine_options = trt_mod.EngineOptions.from_spec(
        spec, options.gpu, precision=precision, allow_unfused_attention=options.allow_unfused_attention
    )
    plan = tmp / "model.plan"
    with stages.stage("engine", f"TensorRT {precision} engine built (strongly typed)"):
        info = trt_mod.build_engine(served_onnx, plan, spec, engine_options)
    with stages.stage("engine_parity", "engine parity with the FP32 ONNX graph proven"):
        pixels = parity_pixels(spec, images, spec.resize_mode)
        engine_scores = run_engine(plan, pixels, spec)
        figures = trt_mod.fp16_parity(onnx_scores(fp32_onnx, spec, pixels), engine_scores)
        vs_graph = float(np.abs(onnx_scores(served_onnx, spec, pixels) - engine_scores).max())
    return plan, {**info.to_dict(), "parity": figures.to_dict(), "max_abs_diff_vs_built_graph": vs_graph}


def _torch_build(
    stages: _Stages,
    ckpt: ckpt_mod.Checkpoint,
    model: Any,
    spec: ModelSpec,
    tmp: Path,
    options: BuildOptions,
    out: Path,
    started: float,
) -> BuildResult:
    """The torch engine: the same parity gate (the pipeline against the served classifier, here on the CPU, through
    the precision's bar), then the classifier's config and weights into the repository."""

    with stages.stage("parity", f"parity of the torch engine ({spec.precision}) with the Transformers pipeline"):
        images = write_parity_images(tmp / "parity", photos=options.parity_photos, seed=options.seed)
        reference = reference_scores(ckpt, model, spec, images)
        import copy

        engine = torch_engine.engine_for(copy.deepcopy(model), spec, precision=spec.precision)
        candidate = torch_engine.scores(engine, parity_pixels(spec, images, spec.resize_mode))
        drift = compare(reference, candidate, spec.labels, [p.name for p in images])
        problems = drift.problems(bar_for(spec.precision))
        if problems:
            raise ParityError(f"torch engine ({spec.precision}) fails its bar: {'; '.join(problems)}")
    with stages.stage("write", "model repository written"):
        saved = tmp / "torch"
        model.save_pretrained(saved, safe_serialization=True)
        (out / REPORT_FILENAME).unlink(missing_ok=True)
        write_repository(spec, out, target="python", torch_dir=saved)
    report: dict[str, Any] = {
        "source": spec.source,
        "random_weights": spec.random_weights,
        "from_preset": ckpt.from_preset,
        "target": "python",
        "engine": "torch",
        "precision": spec.precision,
        "labels": list(spec.labels.names),
        "input_hw": list(spec.input_hw),
        "parity": {**drift.as_report(), "bar": bar_for(spec.precision).model_dump(), "resize_mode": spec.resize_mode},
        "versions": _versions(),
        "timings_s": {**stages.timings, "total": round(time.perf_counter() - started, 3)},
    }
    (out / REPORT_FILENAME).write_text(json.dumps(report, indent=2) + "\n")
    result_console.print(
        f"[bold green]built[/] {out} (torch engine, {spec.precision}) in {report['timings_s']['total']:.1f} s; "
        f"max |Δscore| {drift.max_abs_diff:.2e} on {drift.images} images"
    )
    return BuildResult(spec=spec, out_dir=out, onnx_path=out / spec.models.engine / "1" / ONNX_FILENAME, report=report)

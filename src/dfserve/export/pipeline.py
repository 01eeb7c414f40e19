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
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rich.console import Console

from dfserve.engine import torch_module as torch_engine
from dfserve.engine.cpu import HostCpu, describe_isa, read_host
from dfserve.engine.gpu_decode import check_supported
from dfserve.engine.tensorrt import require_tensorrt, run_engine
from dfserve.errors import BuildError, DecodeChoiceError, ParityError
from dfserve.export import checkpoint as ckpt_mod
from dfserve.export import hostspeed
from dfserve.export import tensorrt as trt_mod
from dfserve.export.decode_fidelity import decode_gpu_drift
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
from dfserve.export.policy import DECODE_GPU_BAR, DEFAULT_MODEL_ID, SPEED_SECONDS, default_batching
from dfserve.export.precision import convert
from dfserve.export.summary import host_report, modes_table, print_fidelity, versions
from dfserve.repository.configs import Target
from dfserve.repository.staging import BuildLock, commit, new_staging, remove_leftovers
from dfserve.repository.writer import check_writable, require_replaceable, write_repository
from dfserve.spec.model import (
    DEFAULT_DECODE,
    DEFAULT_RESIZE_MODE,
    REPORT_FILENAME,
    RESIZE_MODES,
    Batching,
    Decode,
    Engine,
    GpuServing,
    Limits,
    ModelSpec,
    Precision,
    ResizeMode,
)
from dfserve.spec.names import BUILD_MARKER_FILENAME, ONNX_FILENAME, SPEC_FILENAME
from dfserve.terminal import console as make_console
from dfserve.terminal import progress

log = logging.getLogger(__name__)

PARITY_PROGRESS = f"parity (each image through the reference pipeline, then {len(RESIZE_MODES)} resize modes)"


@dataclass
class BuildOptions:
    out: Path
    model: str = DEFAULT_MODEL_ID
    revision: str | None = None
    random_weights: bool = False
    negative_label: str | None = None
    positive_label: str | None = None
    target: Target = "python"
    precision: Precision | Literal["auto"] | None = None
    """None: the engine's natural precision (FP16 for TensorRT, FP32 for ONNX Runtime and torch). auto (ONNX Runtime
    targets): build every `hostspeed.AUTO_CANDIDATES`, measure them here, serve `hostspeed.choose`'s pick."""
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
    decode: Decode = DEFAULT_DECODE
    """gpu: the served `detector` decodes and resizes on the engine's device (the torch engine; see
    `dfserve.engine.gpu_decode`), gated by `FIDELITY_BARS["decode_gpu"]` on this checkpoint."""
    opset: int = ModelSpec.model_fields["onnx_opset"].default
    parity_photos: int = 8
    speed_seconds: float = SPEED_SECONDS
    """Seconds per graph, batch and round of the speed measurement against FP32 on this host (reduced precisions
    and auto on the ONNX Runtime targets); 0 measures one run of each."""
    speed_rounds: int = 2
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


def _quiet_libraries() -> None:
    """The exporters' tracer warnings and advice would bury the build's own progress; -v shows them."""
    if log.isEnabledFor(logging.DEBUG):
        return
    warnings.filterwarnings("ignore", module=r"(torch|transformers|timm)(\.|$)")
    warnings.filterwarnings("ignore", message=r".*(TracerWarning|slow image processor|use_fast).*")
    for name in ("transformers", "timm", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def build(options: BuildOptions, console: Console | None = None) -> BuildResult:
    """Run every stage; raises a `BuildError` subclass naming the problem on failure.

    One build per `out` at a time (an exclusive lock; a second is refused naming the first), written into a
    staging folder inside `out` and moved into place only once complete, so a failure leaves the old repository
    as it was (`dfserve.repository.staging`)."""
    console = console or make_console(stderr=True)
    check_decode(options)  # a usage error: before anything is written
    out = Path(options.out)
    check_writable(out)
    with BuildLock(out):
        for leftover in remove_leftovers(out):
            console.print(f"removed what a failed build left: {leftover}")
        marker = out / BUILD_MARKER_FILENAME
        after_failed_build = marker.exists()  # we hold the lock: a marker is a dead build's
        # Marked from the start: a deployment waiting for this build must not take an older report for its end.
        marker.write_text(f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        staging = new_staging(out)
        committing = False
        try:
            staged = _build(options, console, staging, shown=out)
            m = staged.spec.models
            require_replaceable(staged.spec, out, after_failed_build=after_failed_build)
            committing = True
            commit(staging, out, [m.engine, m.preprocess, m.ensemble, SPEC_FILENAME, REPORT_FILENAME])
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if not committing:  # nothing in `out` was touched: it is the complete old repository again
                marker.unlink(missing_ok=True)
            raise
        marker.unlink(missing_ok=True)
    return BuildResult(
        spec=staged.spec,
        out_dir=out,
        onnx_path=out / staged.spec.models.engine / "1" / ONNX_FILENAME,
        report=staged.report,
    )


def _build(options: BuildOptions, console: Console, out: Path, *, shown: Path) -> BuildResult:
    _quiet_libraries()
    stages = _Stages(console)
    if options.target == "tensorrt":  # before minutes of export, not after
        require_tensorrt()
    started = time.perf_counter()
    console.print(f"[bold]dfserve build[/] {options.model} -> {shown} (target {options.target})")
    if options.speed_seconds < 0 or options.speed_rounds < 1:
        raise BuildError(
            f"the speed measurement needs --speed-seconds >= 0 and at least one round, got {options.speed_seconds} "
            f"s and {options.speed_rounds} round(s)"
        )
    if options.precision == "auto" and (options.target == "tensorrt" or options.engine == "torch"):
        raise BuildError("--precision auto is for ONNX Runtime on CPUs (the python and container targets)")
    # The CPU that ONNX Runtime builds measure on and whose cores set the CPU defaults; not TensorRT's.
    host = read_host() if options.target != "tensorrt" and options.engine == "onnx" else None

    with stages.stage("resolve", "checkpoint located and checked"):
        ckpt = ckpt_mod.resolve(options.model, revision=options.revision, random_weights=options.random_weights)
        spec = ModelSpec(
            source=options.model,
            revision=options.revision,
            architecture=ckpt.architecture,
            random_weights=options.random_weights,
            labels=ckpt_mod.labels_for(ckpt, negative=options.negative_label, positive=options.positive_label),
            preprocessing=ckpt_mod.preprocessing_for(ckpt),
            batching=resolve_batching(options, host=host),
            limits=options.limits,
            onnx_opset=options.opset,
            resize_mode=options.resize_mode,
            decode=options.decode,
            engine="tensorrt" if options.target == "tensorrt" else "onnx",
            precision=_precision(options),
        )
        if options.engine == "torch":
            if ckpt.is_timm:
                raise BuildError("--engine torch serves Transformers checkpoints; a timm checkpoint is served as ONNX")
            if spec.precision == "int8":
                raise BuildError("--precision int8 is for the ONNX Runtime targets; the torch engine runs fp32 or fp16")
            spec = spec.model_copy(update={"engine": "torch"})
        if spec.decode == "gpu":
            check_supported(spec.preprocessing)
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
            return _torch_build(stages, ckpt, model, spec, tmp, options, out, started, shown)

        from dfserve.export.onnx_graph import export_onnx  # onnx and its exporter: not needed by the torch engine

        onnx_tmp = tmp / ONNX_FILENAME
        with stages.stage("export", f"ONNX exported and composed (opset {spec.onnx_opset})"):
            export_onnx(model, spec, onnx_tmp, core_path=tmp / "classifier.onnx")
        onnx_bytes = onnx_tmp.stat().st_size

        with stages.stage("parity", "parity with the reference pipeline proven", spinner=False):
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
        console.print(modes_table(parity.modes, spec.resize_mode, reference=parity.pipeline))

        served_onnx, precision_report = onnx_tmp, None
        # The tensorrt target too: TensorRT builds the proven FP16 graph itself (strongly typed), see `_tensorrt_stage`.
        auto = options.precision == "auto"
        wanted = [p for p in hostspeed.AUTO_CANDIDATES if p != "fp32"] if auto else [spec.precision]
        built: dict[str, tuple[Path, dict[str, Any]]] = {}
        failed: dict[str, str] = {}
        for precision in (p for p in wanted if p != "fp32"):
            path = tmp / f"model.{precision}.onnx"
            with stages.stage(precision, f"{precision.upper()} graph built and its fidelity proven"):
                try:
                    built[precision] = (
                        path,
                        _reduced_precision(
                            spec.model_copy(update={"precision": precision}),
                            onnx_tmp,
                            tmp / "classifier.onnx",
                            path,
                            images,
                            parity.reference,
                        ),
                    )
                except ParityError as exc:
                    if not auto:
                        raise
                    failed[precision] = str(exc)
            if precision in built:
                print_fidelity(console, precision, built[precision][1])
        speed, choice = None, None
        if host is not None and built:
            speed = _speed_stage(stages, spec, onnx_tmp, built, images, host, options)
        if auto:
            assert host is not None
            choice = hostspeed.choose(host, speed, failed)
            console.print(f"  [bold]--precision auto[/] serves {choice.reason}")
            spec = spec.model_copy(
                update={
                    "precision": choice.precision,
                    "batching": resolve_batching(options, precision=choice.precision, host=host),
                }
            )
        no_gain = hostspeed.no_gain_line(spec.precision, speed, host) if speed and host else None
        if no_gain and not auto:
            console.print(f"  [bold yellow]{no_gain}[/]")
        if spec.precision != "fp32":
            served_onnx, precision_report = built[spec.precision]
            onnx_bytes = served_onnx.stat().st_size
        if host is not None:
            measured = hostspeed.measured_record(speed) if speed else {}
            served = {k: v for k, v in measured.items() if k.startswith(f"{spec.precision}_")}
            spec = spec.model_copy(update={"build_host": host.record(served)})

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
        "reference": parity.pipeline,
        "parity": parity.as_report(),
        "precision": {
            "served": spec.precision,
            **(precision_report or {}),
            **({"speed": speed} if speed else {}),
            **({"auto": {"chosen": choice.precision, "reason": choice.reason, "failed": failed}} if choice else {}),
            **({"no_gain": no_gain} if no_gain else {}),
        },
        "host": host_report(host),
        "engine": engine_report,
        "versions": versions(),
        "timings_s": {**stages.timings, "total": round(time.perf_counter() - started, 3)},
    }
    (out / REPORT_FILENAME).write_text(json.dumps(report, indent=2) + "\n")
    result_console.print(
        f"[bold green]built[/] {shown} in {report['timings_s']['total']:.1f} s "
        f"(ONNX {onnx_bytes / 2**20:.1f} MiB); report: {shown / REPORT_FILENAME}"
    )
    return BuildResult(spec=spec, out_dir=out, onnx_path=out / spec.models.engine / "1" / ONNX_FILENAME, report=report)


def check_decode(options: BuildOptions) -> None:
    """Refuse, before any work, a decode choice this build cannot serve."""
    if options.decode != "gpu":
        return
    if options.engine == "onnx" and options.target != "tensorrt":
        raise DecodeChoiceError(
            "--decode gpu needs a GPU engine (--engine torch or --engine tensorrt); "
            "the onnx engine serves on CPUs, where --decode cpu is the exact path"
        )
    if options.target == "tensorrt":
        raise DecodeChoiceError(
            "--decode gpu with --engine tensorrt (the DALI backend in NVIDIA's Triton container) is not built yet: "
            "see docs/gpu.md; use --engine torch --decode gpu, or --decode cpu"
        )


def resolve_batching(
    options: BuildOptions, precision: Precision | None = None, host: HostCpu | None = None
) -> Batching:
    """The one place where the defaults follow the spec's engine and precision (`precision`: auto's pick) and the
    build host's cores (`host`; None: `CPU_BATCHING` as measured)."""
    engine: Engine = "tensorrt" if options.target == "tensorrt" else options.engine
    base = options.batching or default_batching(engine, precision or _precision(options), host)
    if options.batching_overrides:
        base = Batching.model_validate({**base.model_dump(), **options.batching_overrides})
    return options.gpu.for_gpu(base) if options.target == "tensorrt" else base


def _precision(options: BuildOptions) -> Precision:
    """The precision the spec starts with (auto: FP32 until the measurement picks)."""
    if options.precision is None or options.precision == "auto":
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


def _speed_stage(
    stages: _Stages,
    spec: ModelSpec,
    fp32: Path,
    built: dict[str, tuple[Path, dict[str, Any]]],
    images: list[Path],
    host: HostCpu,
    options: BuildOptions,
) -> dict[str, Any]:
    """Every reduced graph against FP32 on this CPU, as served (`hostspeed.measure`), printed one line each."""
    batches = hostspeed.served_batches(spec)
    with stages.stage("speed", f"speed against FP32 measured on this CPU (batch {', '.join(map(str, batches))})"):
        speed = hostspeed.measure(
            {"fp32": fp32, **{p: path for p, (path, _) in built.items()}},
            spec,
            parity_pixels(spec, images, spec.resize_mode),
            seconds=options.speed_seconds,
            rounds=options.speed_rounds,
            batches=batches,
        )
    rates = speed["images_per_s"]
    for precision, per in speed["over_fp32"].items():
        figures = ", ".join(
            f"batch {b}: {rates[precision][b]:.2f} vs {rates['fp32'][b]:.2f} images/s = {r:.2f}x"
            for b, r in per.items()
        )
        stages.console.print(
            f"  {precision.upper()} against FP32 on {host.model} ({describe_isa(host.accelerates(precision))}): "
            f"{figures}"
        )
    return speed


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
    shown: Path,
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
    modes: dict[str, dict[str, Any]] = {spec.resize_mode: {**drift.as_report(), "passes": True}}
    decode_report: dict[str, Any] | None = None
    if spec.decode == "gpu":
        with stages.stage("decode_parity", "GPU decode path's drift from the Transformers pipeline measured"):
            decode_report = decode_gpu_drift(spec, engine, images, reference)
    stages.console.print(modes_table(modes, spec.resize_mode, decode_report))
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
        "decode": spec.decode,
        **({DECODE_GPU_BAR: decode_report} if decode_report is not None else {}),
        "versions": versions(),
        "timings_s": {**stages.timings, "total": round(time.perf_counter() - started, 3)},
    }
    (out / REPORT_FILENAME).write_text(json.dumps(report, indent=2) + "\n")
    result_console.print(
        f"[bold green]built[/] {shown} (torch engine, {spec.precision}) in {report['timings_s']['total']:.1f} s; "
        f"max |Δscore| {drift.max_abs_diff:.2e} on {drift.images} images"
    )
    return BuildResult(spec=spec, out_dir=out, onnx_path=out / spec.models.engine / "1" / ONNX_FILENAME, report=report)

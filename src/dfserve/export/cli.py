"""`dfserve build`: the command-line face of `dfserve.export.pipeline.build`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from dfserve.commandline import constrained, positive_int, positive_ints
from dfserve.export.policy import DEFAULT_MODEL_ID, SPEED_SECONDS
from dfserve.spec.model import (
    DECODES,
    DEFAULT_DECODE,
    DEFAULT_RESIZE_MODE,
    RESIZE_MODES,
    Batching,
    GpuServing,
    Limits,
    ModelSpec,
    Precision,
)
from dfserve.spec.names import DEFAULT_REPOSITORY


def add_batching_arguments(parser: argparse.ArgumentParser) -> None:
    """Dynamic batching flags. Unset flags keep `dfserve.export.policy.default_batching` for the engine and precision
    (CPU-tuned for ONNX Runtime: `CPU_BATCHING`), so the help shows no fixed numbers."""
    g = parser.add_argument_group(
        "batching (written into config.pbtxt; default: dfserve.export.policy.default_batching for engine and precision)"
    )
    g.add_argument(
        "--max-batch-size",
        type=constrained(Batching, "max_batch_size"),
        default=None,
        help="largest batch the engine takes (default: the build's batching for the engine and precision)",
    )
    g.add_argument(
        "--preferred-batch-sizes",
        type=positive_ints,
        default=None,
        help="batch sizes the dynamic batcher sends at once, comma-separated (default: none, so the queue delay "
        "gathers batches; preferred sizes suit engines with several optimisation profiles)",
    )
    g.add_argument(
        "--max-queue-delay-us",
        type=constrained(Batching, "max_queue_delay_us"),
        default=None,
        help="how long a request may wait for others to fill a batch, in microseconds (default: the build's "
        "batching for the engine and precision)",
    )
    gpu = GpuServing()
    g.add_argument(
        "--engine-instances",
        type=constrained(Batching, "engine_instances"),
        default=None,
        help=f"engine instances (default: the build's batching; {gpu.engine_instances} on the GPU target tensorrt)",
    )
    g.add_argument(
        "--preprocess-instances",
        type=constrained(Batching, "preprocess_instances"),
        default=None,
        help="decode/resize instances, each a process (default: the build's batching; one per CPU core of this host "
        "on the GPU target tensorrt)",
    )
    g.add_argument(
        "--engine-threads",
        type=constrained(Batching, "engine_threads"),
        default=None,
        help="ONNX Runtime intra-op threads per engine instance, 0 for all (default: the build's batching)",
    )


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


def batching_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The `Batching` fields the command line set explicitly (the build applies them over its defaults)."""
    given = {
        "max_batch_size": args.max_batch_size,
        "preferred_batch_sizes": args.preferred_batch_sizes,
        "max_queue_delay_us": args.max_queue_delay_us,
        "engine_instances": args.engine_instances,
        "preprocess_instances": args.preprocess_instances,
        "engine_threads": args.engine_threads,
    }
    out = {k: v for k, v in given.items() if v is not None}
    if args.max_batch_size is not None:
        out["preprocess_max_batch_size"] = args.max_batch_size
        if args.preferred_batch_sizes is not None:
            out["preferred_batch_sizes"] = tuple(b for b in args.preferred_batch_sizes if b <= args.max_batch_size)
    return out


def gpu_from_args(args: argparse.Namespace) -> GpuServing:
    """`GpuServing` with the instance counts the user gave (the rest of it has no flags yet)."""
    d = GpuServing()
    return GpuServing(
        engine_instances=_given(args.engine_instances, d.engine_instances),
        preprocess_instances=args.preprocess_instances,
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "build",
        help="export a checkpoint to ONNX (and TensorRT) and write a Triton model repository",
        description=(
            "Export a Hugging Face ViT classifier to ONNX, prove it against the Transformers pipeline "
            "and write a Triton model repository (preprocess + engine + ensemble) with build_report.json."
        ),
    )
    p.add_argument("--model", default=DEFAULT_MODEL_ID, help="hub id or local checkpoint folder (default %(default)s)")
    p.add_argument("--revision", help="hub revision (branch, tag or commit) to pin (default: the hub's main branch)")
    p.add_argument(
        "--out",
        "--repository",
        dest="out",
        type=Path,
        default=Path(DEFAULT_REPOSITORY),
        metavar="DIR",
        help="the model repository to write (default: ./%(default)s, which `dfserve serve` serves); --repository "
        "is the same option, named as serve, soak and bench name the folder they read",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="build the architecture without trained weights (throughput work only; the report says so)",
    )
    p.add_argument("--negative-label", help="name of the negative class of a single-logit detector (default real)")
    p.add_argument("--positive-label", help="name of the positive class (default: from config.json, else fake)")
    p.add_argument(
        "--target",
        choices=("python", "container"),
        default="python",
        help="python: ONNX Runtime in the Python backend (the embedded nvidia-pytriton server); "
        "container: platform onnxruntime_onnx for NVIDIA's Triton containers (default %(default)s)",
    )
    p.add_argument(
        "--engine",
        choices=("onnx", "tensorrt", "torch"),
        default="onnx",
        help="tensorrt: compile a TensorRT engine (GPU host with TensorRT only); torch: PyTorch in the Python "
        "backend, on CUDA where there is a GPU (a plain GPU host, no containers), else the CPU",
    )
    p.add_argument(
        "--precision",
        choices=(*get_args(Precision), "auto"),
        default=None,
        help="the served engine's arithmetic (default: fp32 for ONNX Runtime, fp16 for TensorRT). fp16 and int8 "
        "graphs are built here and pass their fidelity gate against the Transformers pipeline at every build, and "
        "are timed against FP32 on this CPU (the report records the ratio and the CPU's instruction sets). auto "
        "(ONNX Runtime): build fp32 and int8, serve the fastest that passes its bar on this CPU, and say why",
    )
    p.add_argument(
        "--speed-seconds",
        type=float,
        default=SPEED_SECONDS,
        help="seconds per graph, batch and round of the speed measurement against FP32 (default %(default)s)",
    )
    p.add_argument(
        "--resize-mode",
        choices=RESIZE_MODES,
        default=DEFAULT_RESIZE_MODE,
        help="server-side resize: exact (default: pixel-identical to the Transformers processor), box (resize only "
        "the cropped region in Pillow's pass order: faster, pixels within a grey level or two), draft (JPEG draft "
        "decoding: fastest, changes pixels); the build report measures all three on this checkpoint",
    )
    p.add_argument(
        "--decode",
        choices=DECODES,
        default=DEFAULT_DECODE,
        help="where the served detector decodes and resizes files: cpu (default: the exact path above) or gpu "
        "(JPEGs decoded by nvJPEG and resized on the engine's device, other formats per image on the exact path; "
        "for --engine torch, whose build measures its drift and holds it to the decode_gpu bar)",
    )
    opset = ModelSpec.model_fields["onnx_opset"].default
    p.add_argument(
        "--opset",
        type=constrained(ModelSpec, "onnx_opset"),
        default=opset,
        help="ONNX opset, at least 17 (default %(default)s)",
    )
    p.add_argument("--parity-photos", type=positive_int, default=8, help="real photographs in the parity set")
    limits = Limits()
    p.add_argument(
        "--max-file-bytes",
        type=constrained(Limits, "max_file_bytes"),
        default=limits.max_file_bytes,
        help="largest encoded image the server accepts (default %(default)s bytes)",
    )
    p.add_argument(
        "--max-pixels",
        type=constrained(Limits, "max_pixels"),
        default=limits.max_pixels,
        help="largest image, checked from the header before decoding: the decompression-bomb guard "
        "(default %(default)s)",
    )
    p.add_argument(
        "--allow-unfused-attention",
        action="store_true",
        help="tensorrt: serve an FP16 engine whose attention TensorRT did not fuse (up to 2x slower), with a "
        "warning, instead of failing the build",
    )
    add_batching_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dfserve.export.pipeline import BuildOptions, build
    from dfserve.repository.configs import Target

    target: Target = "tensorrt" if args.engine == "tensorrt" else args.target
    build(
        BuildOptions(
            out=args.out,
            model=args.model,
            revision=args.revision,
            random_weights=args.random_weights,
            negative_label=args.negative_label,
            positive_label=args.positive_label,
            target=target,
            precision=args.precision,
            engine="torch" if args.engine == "torch" else "onnx",
            batching_overrides=batching_from_args(args),
            gpu=gpu_from_args(args),
            resize_mode=args.resize_mode,
            decode=args.decode,
            opset=args.opset,
            parity_photos=args.parity_photos,
            allow_unfused_attention=args.allow_unfused_attention,
            speed_seconds=args.speed_seconds,
            limits=Limits(max_file_bytes=args.max_file_bytes, max_pixels=args.max_pixels),
        )
    )
    return 0

"""Build policy: the fidelity bars every reduced-precision or shortcut path must pass, the CPU serving defaults a
build writes, and the presets of the default checkpoint.

These are decisions of `dfserve build` (and of `dfserve verify`, which holds a deployment to the same bars), not
facts of a served model, so they live with the build rather than in `dfserve.spec`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict

from dfserve.engine.cpu import HostCpu
from dfserve.spec.model import Batching, Engine, GpuServing, Precision


class FidelityBar(BaseModel):
    """How far a served model may be from the reference Transformers pipeline and still pass a gate."""

    model_config = ConfigDict(frozen=True)

    max_abs_diff: float
    """Largest |Δscore| on any image of the parity set."""
    min_agreement: float
    """Smallest fraction of images whose decision (threshold 0.5 for one logit, arg-max otherwise) agrees."""


DECODE_GPU_BAR = "decode_gpu"
"""The key of the GPU decode path's bar in FIDELITY_BARS, and of its figures in build_report.json."""


FIDELITY_BARS: dict[str, FidelityBar] = {
    "fp32": FidelityBar(max_abs_diff=1e-4, min_agreement=1.0),
    "fp16": FidelityBar(max_abs_diff=1e-2, min_agreement=0.995),
    "int8": FidelityBar(max_abs_diff=2e-2, min_agreement=0.99),
    # `--decode gpu`: another JPEG decoder and PyTorch's resize instead of Pillow's, measured end to end (served
    # engine included) on the checkpoint being built. The H200 figures: scores within 2.4e-3, 0 flips.
    DECODE_GPU_BAR: FidelityBar(max_abs_diff=1e-2, min_agreement=1.0),
}
"""The one table of bars, by precision: the build's gates and `dfserve verify` both read it."""


_CPU_UNBATCHED = Batching(
    max_batch_size=1,
    max_queue_delay_us=0,
    engine_instances=1,
    engine_threads=0,
    preprocess_instances=2,
    max_queue_size=0,  # no delay: see Batching.MIN_DELAY_WITH_QUEUE_BOUND_US
)
CPU_BATCHING: dict[Precision, Batching] = {"fp32": _CPU_UNBATCHED, "fp16": _CPU_UNBATCHED, "int8": _CPU_UNBATCHED}
"""Serving defaults for ONNX Runtime on CPUs, by precision: the one place a build's CPU batching comes from.

Chosen by `python -m dfserve.bench.tune` on the project's 2-core AVX-512 VNNI machine (docs/benchmarks.md, "CPU
serving defaults", with the figures and commands). On a CPU a batch does not make an image cheaper, for FP32 nor
for INT8 (server CPU seconds per image: FP32 0.39 unbatched, up to 0.45 at max batch 32; INT8 0.16-0.18
unbatched, 0.17-0.21 batched), so no batching (max batch 1, no queue delay, no preferred sizes). One `vit`
instance with ONNX Runtime's default thread count (all cores): on a quiet machine it kept served / raw at 1.00-1.06
for FP32 at every concurrency from 1 to 16, where two instances of that size fell to 0.91-0.97 (their threads
oversubscribe the cores) and one thread per instance leaves a lone request on one core. Requests queue in Triton
while the one instance computes, so their transfer and decoding overlap its work. Spinning is off in the server,
so the instance yields cores to `preprocess` (two instances: one per core). The same table for every precision:
INT8's figures were within the machine's noise for max batch 1 and 4 (worst served / raw 0.89 and 0.92), so
no precision gets values of its own; FP16 (not measured: slow on CPUs) follows FP32. These are the 2-core
figures; `cpu_batching` scales them to the host's cores (docs/benchmarks.md, "CPU precision by host")."""

MIN_SPEEDUP = 1.1
"""A reduced precision below this many times FP32's images/s on the build host buys nothing for its drift: the
build says so, and `--precision auto` keeps FP32. Above run-to-run noise on a quiet machine (a few %) and below
every gain measured with VNNI (1.46-1.98x)."""

SPEED_SECONDS = 3.0
"""Seconds per graph, batch and round (two rounds) of a build's speed measurement against FP32: at the full-size
ViT-S/16@384's 5-13 images/s on 2 cores, 15-40 runs per window; a few seconds of a build that takes minutes."""

CORES_PER_PREPROCESS = 4
"""One `preprocess` instance per this many cores (at least 2). Decoding and resizing a detector image costs
0.023 s of CPU beside FP32's 0.327 s in the engine and 0.031 s beside INT8's 0.158 s (served detector minus served
vit, docs/benchmarks.md): 7-16 % of the CPU per image, so one single-threaded decoder per 4 cores keeps ahead of
the engine with room to spare; two at least, so that one slow 4000x3000 JPEG does not hold up the next request."""


def cpu_batching(precision: Precision, host: HostCpu | None = None) -> Batching:
    """`CPU_BATCHING[precision]` for `host`'s cores: one `vit` instance (its intra-op threads use every core; a
    second instance only oversubscribed them), `preprocess` instances by `CORES_PER_PREPROCESS`, and explicit
    engine threads where a cgroup quota or affinity mask allows fewer cores than the machine has (ONNX Runtime's
    default thread count follows the machine, and its threads would then fight over the quota)."""
    base = CPU_BATCHING[precision]
    if host is None:
        return base
    return base.model_copy(
        update={
            "preprocess_instances": max(2, math.ceil(host.cores / CORES_PER_PREPROCESS)),
            "engine_threads": host.cores if host.quota_limited else base.engine_threads,
        }
    )


def default_batching(engine: Engine, precision: Precision, host: HostCpu | None = None) -> Batching:
    """The batching a build writes unless told otherwise: `cpu_batching(precision, host)` where ONNX Runtime runs
    `vit` (the python and container targets, which serve on CPUs here), `Batching()` for PyTorch, and for TensorRT
    the GPU's max batch (`GpuServing.max_batch_size`)."""
    if engine == "tensorrt":
        return Batching(max_batch_size=GpuServing().max_batch_size)
    return cpu_batching(precision, host) if engine == "onnx" else Batching()


# The published shape of buildborderless/CommunityForensics-DeepfakeDet-ViT, kept so that an offline build
# with --random-weights still builds the real architecture.
DEFAULT_MODEL_ID = "buildborderless/CommunityForensics-DeepfakeDet-ViT"


DEFAULT_VIT_CONFIG: dict[str, Any] = {
    "architectures": ["ViTForImageClassification"],
    "model_type": "vit",
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "image_size": 384,
    "patch_size": 16,
    "num_channels": 3,
    "qkv_bias": True,
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
}


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


DEFAULT_PROCESSOR_CONFIG: dict[str, Any] = {
    "image_processor_type": "CLIPImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 440},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 384, "width": 384},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": list(CLIP_MEAN),
    "image_std": list(CLIP_STD),
    "do_convert_rgb": True,
}

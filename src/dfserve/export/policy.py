"""Build policy: the fidelity bars every reduced-precision or shortcut path must pass, the CPU serving defaults a
build writes, and the presets of the default checkpoint.

These are decisions of `dfserve build` (and of `dfserve verify`, which holds a deployment to the same bars), not
facts of a served model, so they live with the build rather than in `dfserve.spec`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from dfserve.spec.model import Batching, Engine, Precision


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


_CPU_UNBATCHED = Batching(
    max_batch_size=1, max_queue_delay_us=0, engine_instances=1, engine_threads=0, preprocess_instances=2
)


CPU_BATCHING: dict[Precision, Batching] = {"fp32": _CPU_UNBATCHED, "fp16": _CPU_UNBATCHED, "int8": _CPU_UNBATCHED}


def default_batching(engine: Engine, precision: Precision) -> Batching:
    """The batching a build writes unless told otherwise: `CPU_BATCHING[precision]` where ONNX Runtime runs `vit`
    (the python and container targets, which serve on CPUs here), `Batching()` for TensorRT and PyTorch."""
    return CPU_BATCHING[precision] if engine == "onnx" else Batching()


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

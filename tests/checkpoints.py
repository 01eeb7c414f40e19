"""Small checkpoints made at test time: random weights, the real file layout of a Transformers checkpoint.

They cover the label shapes (one logit, two classes, five classes) and both preprocessing policies (the
fixed resize of ViTImageProcessor, the shortest-edge + centre crop of CLIPImageProcessor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from dfserve.export.checkpoint import save_random_checkpoint
from dfserve.export.policy import CLIP_MEAN, CLIP_STD

LabelShape = Literal["one", "two", "five"]
Policy = Literal["fixed", "shortest_edge"]

LABEL_SETS: dict[str, dict[str, str]] = {
    "one": {"0": "LABEL_0"},
    "two": {"0": "real", "1": "fake"},
    "five": {"0": "cat", "1": "dog", "2": "bird", "3": "fish", "4": "horse"},
}


def vit_config(labels: LabelShape = "one", image_size: int = 32) -> dict[str, Any]:
    id2label = LABEL_SETS[labels]
    return {
        "architectures": ["ViTForImageClassification"],
        "model_type": "vit",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": image_size,
        "patch_size": 8,
        "num_channels": 3,
        "qkv_bias": True,
        "id2label": id2label,
        "label2id": {v: int(k) for k, v in id2label.items()},
    }


def processor_config(policy: Policy = "shortest_edge", image_size: int = 32) -> dict[str, Any]:
    if policy == "fixed":
        return {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"height": image_size, "width": image_size},
            "resample": 2,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        }
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size + image_size // 8},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "do_convert_rgb": True,
    }


def make_checkpoint(
    path: Path,
    labels: LabelShape = "one",
    policy: Policy = "shortest_edge",
    image_size: int = 32,
    seed: int = 0,
    head_scale: float = 1.0,
) -> Path:
    """A complete checkpoint folder (config.json, model.safetensors, preprocessor_config.json).

    `head_scale` multiplies the classification head: random heads give scores near 0.5 that hide drift; a scale
    of 10–50 spreads them over (0, 1), as a trained detector's are, and makes every pixel difference show."""
    folder = save_random_checkpoint(
        Path(path),
        config=vit_config(labels, image_size),
        processor_config=processor_config(policy, image_size),
        seed=seed,
    )
    if head_scale != 1.0:
        from safetensors.torch import load_file, save_file

        weights = load_file(folder / "model.safetensors")
        for name in ("classifier.weight", "classifier.bias"):
            weights[name] = weights[name] * head_scale
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder

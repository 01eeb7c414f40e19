"""timm checkpoints: timm's hub format, and the Community Forensics authors' release of their timm model.

Two layouts, both a folder (or hub snapshot) with `config.json` and `model.safetensors`:

- timm's hub format (`timm.models.push_to_hf_hub` / `save_for_hf`): `config.json` holds `architecture` (a timm
  model name), `num_classes`, optionally `label_names` and `model_args`, and `pretrained_cfg`, whose data fields
  (`input_size`, `crop_pct`, `crop_mode`, `interpolation`, `mean`, `std`) define timm's eval transform; the
  weights are the timm model's own state dict.
- the authors' release of Community Forensics (OwensLab/commfor-model-384, and -224), published through
  huggingface_hub's `PyTorchModelHubMixin`: `config.json` is the init kwargs of their `ViTClassifier`
  (`model_size`, `input_size`, `patch_size`, ...), the weights are that module's state dict, i.e. timm's
  `vit_{size}_patch{p}_{input}` under the attribute `vit` (keys prefixed `vit.`) with its head replaced by
  Linear(embed → 1). Their evaluation recipe (`dataloader.py`, `get_transform` for test): torchvision
  `Resize(440)` (bilinear), `CenterCrop(384)`, `ToTensor`, ImageNet mean/std; `Resize(256)`, `CenterCrop(224)`
  for the 224 model.

Both are loaded as the bare timm model (forward gives the logits), exported by the same exporter as Transformers
checkpoints, and proven against their own reference: timm's `resolve_data_config` + `create_transform` and the
timm model's forward for the hub format, the authors' torchvision recipe and forward for their release. Images
are decoded for the reference as dfserve decodes them (EXIF orientation applied, then RGB).

timm imports torchvision at import time (`timm.layers`); see README ("timm checkpoints") for how it is installed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dfserve.errors import CheckpointError
from dfserve.preprocessing import load_rgb
from dfserve.spec.model import Preprocessing

TimmFormat = Literal["timm", "hub_mixin"]
TIMM_FORMATS: tuple[str, ...] = ("timm", "hub_mixin")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_DEFAULT_CROP_PCT = 0.875
"""timm's `DEFAULT_CROP_PCT`, which `resolve_data_config` uses when `pretrained_cfg` has no `crop_pct`."""
TIMM_DEFAULT_INTERPOLATION = "bicubic"
"""What `resolve_data_config` uses when `pretrained_cfg` names no `interpolation`."""
INTERPOLATIONS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
"""timm's interpolation names (torchvision's modes, applied to Pillow images as these Pillow filters)."""
MIXIN_KEYS = ("model_size", "input_size", "patch_size")
MIXIN_PREFIX = "vit."
MIXIN_EMBED = {"small": 384, "tiny": 192}
"""The authors' `ViTClassifier` sizes and the width of the head it puts on each."""
MIXIN_RECIPES = {384: (440, 384), 224: (256, 224)}
"""input size -> (Resize, CenterCrop) of the authors' test transform (`determine_resize_crop_sizes`)."""
MIXIN_LABELS = ("real", "fake")
"""The authors' label format "real:0,fake:1": sigmoid of the one logit is P(fake)."""


def detect_format(config: dict[str, Any]) -> TimmFormat | None:
    """ "timm" for timm's hub config, "hub_mixin" for the authors' release, None for anything else."""
    if "architectures" not in config and isinstance(config.get("architecture"), str):
        return "timm"
    if all(k in config for k in MIXIN_KEYS) and "model_type" not in config:
        return "hub_mixin"
    return None


def architecture(config: dict[str, Any], fmt: str) -> str:
    """The timm model name the checkpoint is built from."""
    if fmt == "timm":
        return str(config["architecture"])
    size, patch, inp = config["model_size"], config["patch_size"], config["input_size"]
    if size not in MIXIN_EMBED:
        raise CheckpointError(f"model_size {size!r} is not one the authors' ViTClassifier builds ({list(MIXIN_EMBED)})")
    if inp not in MIXIN_RECIPES:
        raise CheckpointError(
            f"input_size {inp!r} has no published recipe; the authors' release has {list(MIXIN_RECIPES)}"
        )
    return f"vit_{size}_patch{patch}_{inp}"


def num_logits(config: dict[str, Any], fmt: str) -> int:
    if fmt == "hub_mixin":
        return 1
    n = config.get("num_classes", config.get("pretrained_cfg", {}).get("num_classes"))
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CheckpointError(f"config.json: num_classes must be a positive integer, got {n!r}")
    return n


def id2label(config: dict[str, Any], fmt: str) -> dict[int, str]:
    """Label names by logit index: `label_names` (timm), or nothing (placeholders, as for Transformers)."""
    if fmt == "hub_mixin":
        return {}
    names = config.get("label_names", config.get("pretrained_cfg", {}).get("label_names"))
    if names is None:
        return {}
    # timm writes a list, or a dict {index: name} where indices have gaps
    items = (
        list(enumerate(names)) if isinstance(names, list) else list(names.items()) if isinstance(names, dict) else []
    )
    try:
        by_index = {int(k): v for k, v in items if isinstance(v, str)}
    except (TypeError, ValueError):
        by_index = {}
    if not by_index or len(by_index) != len(items):
        raise CheckpointError(
            f"config.json: label_names must be a list (or index -> name map) of strings, got {names!r}"
        )
    n = num_logits(config, fmt)
    if (isinstance(names, list) and len(names) != n) or any(not 0 <= i < n for i in by_index):
        raise CheckpointError(f"config.json: {len(names)} label_names for num_classes={n}")
    return by_index


def check(config: dict[str, Any], fmt: str, where: Path) -> None:
    """Refuse, before any weight is loaded, what the build could only fail on later."""
    arch = architecture(config, fmt)
    try:
        import timm
    except Exception as exc:  # ImportError, or torchvision's RuntimeError beside a torch it was not built for
        raise CheckpointError(
            f"{where} is a timm checkpoint ({arch}) but timm cannot be imported ({exc}); install timm with a "
            "torchvision that matches torch (see README, 'timm checkpoints')"
        ) from exc
    if not timm.is_model(arch):
        raise CheckpointError(f"{where}: timm {timm.__version__} has no model {arch!r}")
    if fmt == "timm":
        chans = config.get("model_args", {}).get("in_chans", 3)
        size = config.get("pretrained_cfg", {}).get("input_size", [3])
        if chans != 3 or (isinstance(size, list | tuple) and size and size[0] != 3):
            raise CheckpointError(f"{where}: not a 3-channel (RGB) model; the served graph feeds 3 channels")
        num_logits(config, fmt)


def preprocessing(config: dict[str, Any], fmt: str) -> Preprocessing:
    """timm's eval transform (`transforms_imagenet_eval`) for the hub format, the authors' recipe for theirs."""
    if fmt == "hub_mixin":
        resize, crop = MIXIN_RECIPES[int(config["input_size"])]
        return Preprocessing(
            resize="shortest_edge",
            size=resize,
            crop=(crop, crop),
            resample=INTERPOLATIONS["bilinear"],  # torchvision Resize's default
            crop_rounding="round",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
    cfg = config.get("pretrained_cfg") or {}
    size = cfg.get("input_size", (3, 224, 224))
    if not (isinstance(size, list | tuple) and len(size) == 3 and all(isinstance(v, int) for v in size)):
        raise ValueError(f"pretrained_cfg.input_size must be [channels, height, width], got {size!r}")
    h, w = int(size[1]), int(size[2])
    crop_pct = float(cfg.get("crop_pct") or TIMM_DEFAULT_CROP_PCT)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"pretrained_cfg.crop_pct={crop_pct} is not supported (0 < crop_pct <= 1)")
    mode = cfg.get("crop_mode") or "center"
    interpolation = cfg.get("interpolation") or TIMM_DEFAULT_INTERPOLATION
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"pretrained_cfg.interpolation {interpolation!r} is not supported ({sorted(INTERPOLATIONS)})")
    scale = (math.floor(h / crop_pct), math.floor(w / crop_pct))
    common: dict[str, Any] = {
        "crop": (h, w),
        "resample": INTERPOLATIONS[interpolation],
        "crop_rounding": "round",
        "mean": _triple(cfg.get("mean") or IMAGENET_MEAN, "mean"),
        "std": _triple(cfg.get("std") or IMAGENET_STD, "std"),
    }
    if mode == "squash":
        return Preprocessing(resize="fixed", size=scale, **common)
    if mode != "center":
        raise ValueError(f"pretrained_cfg.crop_mode {mode!r} is not supported (center, squash)")
    if h != w:
        raise ValueError(
            f"a non-square input_size {h}x{w} with crop_mode center (timm's ResizeKeepRatio) is not supported"
        )
    return Preprocessing(resize="shortest_edge", size=scale[0], **common)


def _triple(values: Any, name: str) -> tuple[float, float, float]:
    if not isinstance(values, list | tuple) or len(values) != 3:
        raise ValueError(f"pretrained_cfg.{name} must have 3 values (RGB), got {values!r}")
    return (float(values[0]), float(values[1]), float(values[2]))


def create(config: dict[str, Any], fmt: str) -> Any:
    """The timm model the checkpoint describes, with random weights (not loaded yet)."""
    import timm

    arch = architecture(config, fmt)
    if fmt == "hub_mixin":
        # the authors' ViTClassifier: timm's model with its head replaced by Linear(embed -> 1)
        return timm.create_model(arch, pretrained=False, num_classes=1)
    kwargs = dict(config.get("model_args") or {})
    kwargs.pop("pretrained_cfg", None)
    return timm.create_model(
        arch,
        pretrained=False,
        num_classes=num_logits(config, fmt),
        pretrained_cfg_overlay=dict(config.get("pretrained_cfg") or {}),
        **kwargs,
    )


def load_model(config: dict[str, Any], fmt: str, folder: Path | None, *, random_weights: bool, seed: int) -> Any:
    """The timm model in eval mode: the checkpoint's weights (every key must match), or seeded random ones."""
    import timm
    import torch

    torch.manual_seed(seed)
    # timm's hub format is built by timm's own reader of it (`local-dir:`), as `timm.create_model("hf-hub:...")`
    # would build it; only the weights are loaded here, strictly, instead of through timm's filters (which
    # would, e.g., silently resample a position embedding of another size)
    model = (
        timm.create_model(f"local-dir:{folder}", pretrained=False) if fmt == "timm" and folder else create(config, fmt)
    )
    _check_input_size(model, preprocessing(config, fmt).output_hw, folder)
    if not random_weights:
        assert folder is not None
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
        if fmt == "hub_mixin":
            stray = sorted(k for k in state if not k.startswith(MIXIN_PREFIX))
            if stray:
                raise CheckpointError(
                    f"{folder}: weights outside `vit.` ({', '.join(stray[:3])}): not the authors' format"
                )
            state = {k.removeprefix(MIXIN_PREFIX): v for k, v in state.items()}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"cannot load weights from {folder}: {exc}") from exc
    return model.eval()


def _check_input_size(model: Any, hw: tuple[int, int], folder: Path | None) -> None:
    """A model built for another input size than the transform produces fails here by name, not in the export."""
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    fixed = getattr(getattr(model, "patch_embed", None), "strict_img_size", True)
    if img_size is not None and fixed and tuple(img_size) != tuple(hw):
        raise CheckpointError(
            f"{folder or 'checkpoint'}: timm builds this model for {img_size[0]}x{img_size[1]} input but its eval "
            f"transform produces {hw[0]}x{hw[1]} (pretrained_cfg: input_size, fixed_input_size): not a matching "
            "checkpoint"
        )


def reference_transform(config: dict[str, Any], fmt: str, model: Any) -> Any:
    """The transform the checkpoint's own tooling applies: timm's eval transform resolved from the model's
    `pretrained_cfg` for the hub format, the authors' torchvision recipe for their release."""
    if fmt == "hub_mixin":
        from torchvision import transforms

        resize, crop = MIXIN_RECIPES[int(config["input_size"])]
        return transforms.Compose(
            [
                transforms.Resize(resize),
                transforms.CenterCrop(crop),
                transforms.ToTensor(),
                transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
            ]
        )
    from timm.data import create_transform, resolve_data_config

    return create_transform(**resolve_data_config({}, model=model), is_training=False)


def reference_scores(config: dict[str, Any], fmt: str, model: Any, paths: list[Path], sigmoid: bool) -> np.ndarray:
    """Scores [N,K] from the reference transform and the timm model's forward: [1-p, p] for one logit."""
    import torch
    from PIL import Image

    transform = reference_transform(config, fmt, model)
    rows = []
    with torch.no_grad():
        for path in paths:
            with Image.open(path) as img:
                x = transform(load_rgb(img)).unsqueeze(0)
            logits = model(x).double()
            if sigmoid:
                p = torch.sigmoid(logits[:, :1])
                rows.append(torch.cat([1 - p, p], dim=1)[0].numpy())
            else:
                rows.append(torch.softmax(logits, dim=1)[0].numpy())
    return np.asarray(rows, dtype=np.float64)


def reference_info(config: dict[str, Any], fmt: str, model: Any) -> dict[str, Any]:
    """What the reference was, for the build report and the modes table."""
    import timm

    transform = reference_transform(config, fmt, model)
    return {
        "library": "timm" if fmt == "timm" else "Community Forensics recipe (torchvision) + timm",
        "timm": timm.__version__,
        "processor": type(transform).__name__,
        "backend": "torchvision",
        "transform": " -> ".join(type(t).__name__ + _args(t) for t in getattr(transform, "transforms", [transform])),
    }


def _args(t: Any) -> str:
    size = getattr(t, "size", None)
    interp = getattr(t, "interpolation", None)
    parts = [str(list(size) if isinstance(size, tuple | list) else size)] if size is not None else []
    if interp is not None:
        parts.append(str(getattr(interp, "value", interp)))
    mean = getattr(t, "mean", None)
    if mean is not None:
        parts.append(f"mean={[round(float(v), 4) for v in mean]}, std={[round(float(v), 4) for v in t.std]}")
    return f"({', '.join(parts)})" if parts else ""


def save_random(
    folder: Path,
    *,
    architecture_name: str = "vit_small_patch16_384",
    model_args: dict[str, Any] | None = None,
    num_classes: int = 1,
    label_names: list[str] | None = None,
    pretrained_cfg: dict[str, Any] | None = None,
    seed: int = 0,
    head_scale: float = 1.0,
) -> Path:
    """A timm hub-format folder with seeded random weights (tests, the docs' preprocessing table), written by
    timm's own `save_for_hf`, so that the layout is timm's and not this module's reading of it."""
    import torch
    from timm.models import save_for_hf

    config: dict[str, Any] = {
        "architecture": architecture_name,
        "num_classes": num_classes,
        "model_args": dict(model_args or {}),
        "pretrained_cfg": dict(pretrained_cfg or {}),
    }
    torch.manual_seed(seed)
    model = create(config, "timm")
    _scale_head(model, head_scale)
    save_for_hf(
        model,
        str(folder),
        model_config={"label_names": label_names} if label_names else None,
        model_args=dict(model_args or {}),
        safe_serialization=True,
    )
    return folder


def save_random_mixin(
    folder: Path, *, model_size: str = "tiny", input_size: int = 384, seed: int = 0, head_scale: float = 1.0
) -> Path:
    """A folder in the authors' release format (the mixin's config + `vit.`-prefixed state dict), random weights."""
    import json

    import torch
    from safetensors.torch import save_file

    config = {
        "device": "cuda",
        "freeze_backbone": False,
        "input_size": input_size,
        "model_size": model_size,
        "patch_size": 16,
    }
    torch.manual_seed(seed)
    model = create(config, "hub_mixin")
    _scale_head(model, head_scale)
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"{MIXIN_PREFIX}{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def _scale_head(model: Any, scale: float) -> None:
    """Random weights give logits near 0 (scores near 0.5, hiding drift): a scaled head spreads them."""
    import torch

    if scale != 1.0:
        head = model.get_classifier()
        with torch.no_grad():
            head.weight.mul_(scale)
            head.bias.mul_(scale)

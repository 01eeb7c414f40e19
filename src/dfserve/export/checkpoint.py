"""Find and validate a checkpoint, and turn its files into a `ModelSpec`.

A checkpoint is a Hugging Face hub id or a local folder in the Transformers layout (`config.json`,
`model.safetensors` or a sharded index, `preprocessor_config.json`), in timm's hub format, or in the Community
Forensics authors' release format (both read by `dfserve.export.timm_checkpoint`; this module dispatches).
Everything the serving stack needs (labels, activation, preprocessing) is read from those files here and nowhere
else.

`--random-weights` builds the same architecture from `config.json` alone: for throughput work where the weights
cannot be fetched. Offline, even the default model's `config.json` is out of reach, so its published shape is
kept as a preset in `dfserve.spec.model`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfserve.errors import CheckpointError
from dfserve.export import timm_checkpoint
from dfserve.export.policy import DEFAULT_MODEL_ID, DEFAULT_PROCESSOR_CONFIG, DEFAULT_VIT_CONFIG
from dfserve.spec.model import Labels, Preprocessing

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("ViTForImageClassification",)
AUTO_IMAGE_CLASSIFIERS = {"vit": "ViTForImageClassification"}
"""What `AutoModelForImageClassification` loads for a config without `architectures`, for the supported types."""
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
PLACEHOLDER_PREFIX = "LABEL_"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint whose files have been found and checked."""

    source: str
    revision: str | None
    folder: Path | None
    """Local folder holding the files; None for the offline preset."""
    config: dict[str, Any]
    processor_config: dict[str, Any]
    random_weights: bool
    from_preset: bool = False
    format: str = "transformers"
    """"transformers", or one of `timm_checkpoint.TIMM_FORMATS` ("timm": timm's hub format; "hub_mixin": the
    Community Forensics authors' release)."""

    @property
    def is_timm(self) -> bool:
        return self.format in timm_checkpoint.TIMM_FORMATS

    @property
    def architecture(self) -> str:
        """The class named by `architectures`, else the one Transformers' auto class picks for `model_type` (older
        configs carry only that); "" when neither says. A timm model name for timm checkpoints."""
        if self.is_timm:
            return timm_checkpoint.architecture(self.config, self.format)
        names = self.config.get("architectures") or []
        if names:
            return str(names[0])
        return AUTO_IMAGE_CLASSIFIERS.get(str(self.config.get("model_type")), "")

    @property
    def num_logits(self) -> int:
        if self.is_timm:
            return timm_checkpoint.num_logits(self.config, self.format)
        return len(self.config.get("id2label") or {}) or int(self.config.get("num_labels", 2))


def resolve(model: str, *, revision: str | None = None, random_weights: bool = False) -> Checkpoint:
    """Locate `model` (folder or hub id) and check its files, without loading weights yet."""
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")):
        if not path.is_dir():
            raise CheckpointError(f"checkpoint folder not found: {path}")
        return _from_folder(model, path, revision, random_weights)
    folder = _download(model, revision, random_weights)
    if folder is not None:
        return _from_folder(model, folder, revision, random_weights)
    if model == DEFAULT_MODEL_ID and random_weights:
        log.warning("hub unreachable: using the published shape of %s (preset) with random weights", model)
        return Checkpoint(
            source=model,
            revision=revision,
            folder=None,
            config=dict(DEFAULT_VIT_CONFIG),
            processor_config=dict(DEFAULT_PROCESSOR_CONFIG),
            random_weights=True,
            from_preset=True,
        )
    hint = "" if random_weights else " or --random-weights (same architecture, no trained weights)"
    raise CheckpointError(
        f"cannot fetch {model!r} from the Hugging Face hub (offline, or not in the local cache); "
        f"pass --model DIR (a local checkpoint folder){hint}"
    )


def _download(repo_id: str, revision: str | None, random_weights: bool) -> Path | None:
    """Hub snapshot of the files the build needs: the local cache first, then the network."""
    # Not caught: without the package (an install without the build extra) the CLI names the extra to install,
    # where "None" would have read as "offline".
    from huggingface_hub import snapshot_download

    patterns = [CONFIG_FILE, PROCESSOR_FILE] + ([] if random_weights else ["model.safetensors*"])
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    for local_only in (True, False):
        try:
            return Path(
                snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=local_only)
            )
        except Exception as exc:  # offline, unknown repo, gated repo: all mean "not available"
            log.debug("hub snapshot of %s (local_only=%s) failed: %s", repo_id, local_only, exc)
    return None


def _from_folder(source: str, folder: Path, revision: str | None, random_weights: bool) -> Checkpoint:
    config = _read_json(folder / CONFIG_FILE)
    fmt = timm_checkpoint.detect_format(config)
    if fmt is not None:
        if not random_weights:
            _check_weights(folder)
        timm_checkpoint.check(config, fmt, folder)
        return Checkpoint(source, revision, folder, config, {}, random_weights, format=fmt)
    processor = _read_json(folder / PROCESSOR_FILE)
    if not random_weights:
        _check_weights(folder)
    ckpt = Checkpoint(
        source=source,
        revision=revision,
        folder=folder,
        config=config,
        processor_config=processor,
        random_weights=random_weights,
    )
    if not ckpt.architecture:
        raise CheckpointError(
            f"{folder / CONFIG_FILE} names no architecture (no 'architectures' list, model_type "
            f"{ckpt.config.get('model_type')!r}); supported: {', '.join(SUPPORTED_ARCHITECTURES)}, or a timm "
            "checkpoint ('architecture' and 'pretrained_cfg')"
        )
    if ckpt.architecture not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"unsupported architecture {ckpt.architecture} in {folder / CONFIG_FILE}; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    channels = ckpt.config.get("num_channels", 3)
    if channels != 3:
        raise CheckpointError(
            f"unsupported num_channels={channels} in {folder / CONFIG_FILE}: the served graph feeds 3 (RGB) channels"
        )
    return ckpt


def _check_weights(folder: Path) -> None:
    """The weights are there, in safetensors, and every shard opens."""
    weights = [folder / name for name in WEIGHTS_FILES if (folder / name).exists()]
    pickled = [name for name in PICKLE_WEIGHTS_FILES if (folder / name).exists()]
    if not weights and pickled:
        raise CheckpointError(
            f"{folder} has only {pickled[0]}, pickle weights that dfserve does not load (unpickling runs code); "
            "convert them to model.safetensors (e.g. load with Transformers and save_pretrained("
            "safe_serialization=True)), or pass --random-weights"
        )
    if not weights:
        raise CheckpointError(
            f"no weights in {folder}: expected model.safetensors (or pass --random-weights to build the "
            "architecture without them)"
        )
    _check_safetensors(weights[0])


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"missing {path.name} in checkpoint folder {path.parent}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def _check_safetensors(path: Path) -> None:
    """Open every shard's header, so a truncated or corrupt download fails here with its name."""
    from safetensors import safe_open

    shards = [path]
    if path.name.endswith(".index.json"):
        index = _read_json(path)
        shards = sorted({path.parent / name for name in index.get("weight_map", {}).values()})
    for shard in shards:
        if not shard.is_file():
            raise CheckpointError(f"missing weights shard {shard.name} listed in {path.name}")
        try:
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    f.get_slice(key)
        except Exception as exc:
            raise CheckpointError(f"corrupt safetensors file {shard}: {exc}") from exc
        expected = _safetensors_data_end(shard)
        if expected is not None and shard.stat().st_size < expected:
            raise CheckpointError(
                f"corrupt safetensors file {shard}: truncated ({shard.stat().st_size} of {expected} bytes)"
            )


def _safetensors_data_end(path: Path) -> int | None:
    """The file size a safetensors header promises (8-byte length + header + largest data offset)."""
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
    except Exception:
        return None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + n + max(ends, default=0)


def labels_for(ckpt: Checkpoint, *, negative: str | None = None, positive: str | None = None) -> Labels:
    """Labels from `config.json`. One logit is sigmoid, served as [negative, positive] = [1-p, p]."""
    try:
        return _labels_for(ckpt, negative=negative, positive=positive)
    except ValueError as exc:
        if isinstance(exc, CheckpointError):
            raise
        where = ckpt.folder / CONFIG_FILE if ckpt.folder else "the preset"
        reasons = [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()] if hasattr(exc, "errors") else []
        raise CheckpointError(f"{where}: unusable labels: {'; '.join(reasons) or exc}") from exc


def _labels_for(ckpt: Checkpoint, *, negative: str | None = None, positive: str | None = None) -> Labels:
    """Labels from `config.json`. One logit is sigmoid, served as [negative, positive] = [1-p, p]."""
    if ckpt.is_timm:
        id2label = timm_checkpoint.id2label(ckpt.config, ckpt.format)
    else:
        id2label = {int(k): str(v) for k, v in (ckpt.config.get("id2label") or {}).items()}
    n = ckpt.num_logits
    names = [id2label.get(i, f"{PLACEHOLDER_PREFIX}{i}") for i in range(n)]
    problem = ckpt.config.get("problem_type")
    if n == 1:
        pos = positive or (names[0] if not names[0].startswith(PLACEHOLDER_PREFIX) else "fake")
        neg = negative or "real"
        if neg == pos:
            raise CheckpointError(f"negative and positive labels are both {pos!r}; set --negative-label")
        return Labels(names=(neg, pos), activation="sigmoid", num_logits=1)
    if problem == "multi_label_classification":
        raise CheckpointError("multi-label classifiers (independent sigmoids) are not supported yet")
    if negative or positive:
        raise CheckpointError("--negative-label/--positive-label apply to single-logit detectors only")
    return Labels(names=tuple(names), activation="softmax", num_logits=n)


def preprocessing_for(ckpt: Checkpoint) -> Preprocessing:
    """The processor's policy, refused up front when its output is not the input size the model was built for:
    the reference pipeline fails on such a checkpoint, and the export would fail late with a shape error."""
    if ckpt.is_timm:
        try:
            return timm_checkpoint.preprocessing(ckpt.config, ckpt.format)
        except ValueError as exc:
            raise CheckpointError(f"{ckpt.folder / CONFIG_FILE if ckpt.folder else 'config'}: {exc}") from exc
    try:
        pp = Preprocessing.from_processor_config(ckpt.processor_config)
    except ValueError as exc:
        where = ckpt.folder / PROCESSOR_FILE if ckpt.folder else "the preset"
        raise CheckpointError(f"{where}: {exc}") from exc
    model_hw = _model_input_hw(ckpt.config)
    if model_hw is not None and pp.output_hw != model_hw:
        processor = ckpt.folder / PROCESSOR_FILE if ckpt.folder else "the preset's processor"
        config = ckpt.folder / CONFIG_FILE if ckpt.folder else "the preset's config"
        raise CheckpointError(
            f"{processor} produces {pp.output_hw[0]}x{pp.output_hw[1]} images but {config} expects "
            f"image_size {model_hw[0]}x{model_hw[1]}: not a matching checkpoint"
        )
    return pp


def _model_input_hw(config: dict[str, Any]) -> tuple[int, int] | None:
    """(height, width) from `image_size` (an int or a pair, 224 when absent as in `ViTConfig`); None if unreadable."""
    size = config.get("image_size", 224)
    if isinstance(size, int) and not isinstance(size, bool):
        return (size, size)
    if isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return (int(size[0]), int(size[1]))
    return None


def load_model(ckpt: Checkpoint, seed: int = 0) -> Any:
    """The PyTorch model in eval mode: trained weights, or seeded random ones."""
    if ckpt.is_timm:
        return timm_checkpoint.load_model(
            ckpt.config, ckpt.format, ckpt.folder, random_weights=ckpt.random_weights, seed=seed
        )
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    if ckpt.random_weights:
        torch.manual_seed(seed)
        config = ViTConfig.from_dict({k: v for k, v in ckpt.config.items() if k != "transformers_version"})
        model = ViTForImageClassification(config)
    else:
        assert ckpt.folder is not None
        try:
            model = ViTForImageClassification.from_pretrained(ckpt.folder, use_safetensors=True)
        except Exception as exc:
            raise CheckpointError(f"cannot load weights from {ckpt.folder}: {exc}") from exc
    return model.eval()


def save_random_checkpoint(
    folder: Path,
    *,
    config: dict[str, Any] | None = None,
    processor_config: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Write a complete checkpoint folder with seeded random weights (tests, demos, offline benchmarks)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ViTForImageClassification(ViTConfig.from_dict(config or DEFAULT_VIT_CONFIG))
    model.save_pretrained(folder, safe_serialization=True)
    (folder / PROCESSOR_FILE).write_text(json.dumps(processor_config or DEFAULT_PROCESSOR_CONFIG, indent=2))
    return folder

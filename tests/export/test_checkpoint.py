"""Checkpoint resolution: labels and preprocessing come from the checkpoint's files; every bad checkpoint gets
one clear error naming the problem."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dfserve.cli import main
from dfserve.errors import CheckpointError
from dfserve.export.checkpoint import labels_for, preprocessing_for, resolve
from dfserve.export.policy import CLIP_MEAN, DEFAULT_MODEL_ID
from tests.checkpoints import make_checkpoint


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("five") / "ck", labels="five", policy="fixed")


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_single_logit_is_served_as_two_classes(tiny_checkpoint: Path) -> None:
    ckpt = resolve(str(tiny_checkpoint))
    labels = labels_for(ckpt)
    assert labels.names == ("real", "fake")  # LABEL_0 is a placeholder: the positive class is `fake`
    assert labels.activation == "sigmoid" and labels.num_logits == 1
    assert labels_for(ckpt, negative="authentic", positive="synthetic").names == ("authentic", "synthetic")


def test_named_single_logit_keeps_its_name(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ck")
    _edit_json(folder / "config.json", id2label={"0": "deepfake"}, label2id={"deepfake": 0})
    assert labels_for(resolve(str(folder))).names == ("real", "deepfake")


def test_multi_class_labels_and_fixed_policy(five: Path) -> None:
    ckpt = resolve(str(five))
    labels = labels_for(ckpt)
    assert labels.names == ("cat", "dog", "bird", "fish", "horse") and labels.activation == "softmax"
    pp = preprocessing_for(ckpt)
    assert pp.resize == "fixed" and pp.output_hw == (32, 32) and pp.crop is None and pp.resample == 2
    with pytest.raises(CheckpointError, match="single-logit"):
        labels_for(ckpt, positive="dog")


def test_shortest_edge_policy_is_read_exactly(tiny_checkpoint: Path) -> None:
    pp = preprocessing_for(resolve(str(tiny_checkpoint)))
    assert pp.resize == "shortest_edge" and pp.size == 36 and pp.crop == (32, 32)
    assert pp.resample == 3 and pp.mean == CLIP_MEAN


@pytest.mark.parametrize("missing", ["config.json", "preprocessor_config.json", "model.safetensors"])
def test_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    folder = make_checkpoint(tmp_path / "ck")
    (folder / missing).unlink()
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        resolve(str(folder))


def test_weights_are_optional_with_random_weights(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ck")
    (folder / "model.safetensors").unlink()
    assert resolve(str(folder), random_weights=True).random_weights


def test_pickle_only_weights_are_named_not_called_missing(tmp_path: Path) -> None:
    # A hub checkpoint saved before safetensors has only pytorch_model.bin: "no weights" sent users looking for
    # a download that had not happened.
    folder = make_checkpoint(tmp_path / "ck")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*pickle.*safetensors"):
        resolve(str(folder))


def test_corrupt_safetensors(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ck")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt safetensors file"):
        resolve(str(folder))
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt safetensors file"):
        resolve(str(folder))


def test_unsupported_architecture_names_what_is_supported(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ck")
    _edit_json(folder / "config.json", architectures=["ResNetForImageClassification"])
    with pytest.raises(CheckpointError, match=r"ResNetForImageClassification.*supported: ViTForImageClassification"):
        resolve(str(folder))


def test_unsupported_processor_is_named(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ck")
    _edit_json(folder / "preprocessor_config.json", image_processor_type="ConvNextImageProcessor")
    with pytest.raises(CheckpointError, match="ConvNextImageProcessor is not supported"):
        preprocessing_for(resolve(str(folder)))


def test_processor_size_that_the_model_cannot_take_is_refused_up_front(tmp_path: Path) -> None:
    # The Transformers pipeline itself fails on such a checkpoint; the build used to fail later, inside the ONNX
    # composition, with a shape-inference error that named neither file.
    folder = make_checkpoint(tmp_path / "ck", policy="fixed", image_size=32)
    _edit_json(folder / "preprocessor_config.json", size={"height": 48, "width": 48})
    expected = r"preprocessor_config\.json produces 48x48 .*config\.json expects image_size 32x32"
    with pytest.raises(CheckpointError, match=expected):
        preprocessing_for(resolve(str(folder)))


def test_non_square_model_input_is_matched_per_side(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ck", policy="fixed", image_size=32)
    _edit_json(folder / "config.json", image_size=[24, 32])
    _edit_json(folder / "preprocessor_config.json", size={"height": 24, "width": 32})
    assert preprocessing_for(resolve(str(folder))).output_hw == (24, 32)
    _edit_json(folder / "preprocessor_config.json", size={"height": 32, "width": 24})
    with pytest.raises(CheckpointError, match="32x24"):
        preprocessing_for(resolve(str(folder)))


def test_model_that_is_not_rgb_is_refused_up_front(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ck")
    _edit_json(folder / "config.json", num_channels=1)
    with pytest.raises(CheckpointError, match=r"num_channels=1.*3 \(RGB\)"):
        resolve(str(folder))


def test_a_hub_id_without_huggingface_hub_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In an SDK-only install (no [build] extra), `dfserve build` and `dfserve verify` with a hub id (the default
    # model) used to say "cannot fetch from the hub (offline ...)", sending the user after their network.
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # what an install without the package sees
    with pytest.raises(ModuleNotFoundError):
        resolve("someone/some-model")
    assert main(["build", "--model", "someone/some-model"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "needs the package 'huggingface_hub'" in err
    assert "pip install 'dfserve[build]'" in err


def test_config_without_architectures_is_read_as_the_transformers_auto_class_would(tmp_path: Path) -> None:
    # Older hub configs carry only model_type; the pipeline loads them with AutoModelForImageClassification. The
    # build used to refuse them as "unsupported architecture ?".
    folder = make_checkpoint(tmp_path / "ck")
    data = json.loads((folder / "config.json").read_text())
    del data["architectures"]
    (folder / "config.json").write_text(json.dumps(data))
    assert resolve(str(folder)).architecture == "ViTForImageClassification"
    _edit_json(folder / "config.json", model_type="deit")
    with pytest.raises(CheckpointError, match=r"names no architecture .*model_type 'deit'.*ViTForImageClassification"):
        resolve(str(folder))


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        resolve(str(tmp_path / "nope"))


def test_offline_default_model_needs_a_flag() -> None:
    """This machine cannot reach the hub: the message names both ways out."""
    with pytest.raises(CheckpointError, match=r"--model DIR.*--random-weights"):
        resolve(DEFAULT_MODEL_ID)


def test_offline_default_model_with_random_weights_uses_the_published_shape() -> None:
    ckpt = resolve(DEFAULT_MODEL_ID, random_weights=True)
    assert ckpt.from_preset and ckpt.random_weights
    assert ckpt.config["hidden_size"] == 384 and ckpt.config["image_size"] == 384
    pp = preprocessing_for(ckpt)
    assert (pp.size, pp.crop, pp.resample_name) == (440, (384, 384), "bicubic")
    assert labels_for(ckpt).names == ("real", "fake")


@pytest.mark.parametrize("bad", ["real\nfake", "tab\there", "", "   "])
def test_labels_that_would_break_labels_txt_are_refused(tmp_path: Path, bad: str) -> None:
    """labels.txt holds one name per line: a newline in a label once shifted Triton's class names."""
    import json

    folder = make_checkpoint(tmp_path / "ckpt", labels="two")
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "ok", "1": bad}
    config["label2id"] = {"ok": 0, bad: 1}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unusable labels: .*control character"):
        labels_for(resolve(str(folder)))


def _timm_imports() -> bool:
    try:
        import timm  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(_timm_imports(), reason="the refusal is for environments where timm does not import")
def test_timm_checkpoint_without_timm_names_what_to_install(tmp_path: Path) -> None:
    """Where timm does not import (the main environment: no torchvision beside the CPU torch), a timm checkpoint
    is recognised by its config and refused with the reason, before anything is loaded."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "timm-ckpt"
    folder.mkdir()
    config = {
        "architecture": "vit_small_patch16_384",
        "num_classes": 1,
        "pretrained_cfg": {"input_size": [3, 384, 384]},
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"head.weight": torch.zeros(1, 384)}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"is a timm checkpoint \(vit_small_patch16_384\) but timm cannot be"):
        resolve(str(folder))

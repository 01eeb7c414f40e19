"""`dfserve build` end to end: the real export, parity proof and repository for every label shape and both
preprocessing policies; one-line errors from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfserve.errors import ParityError
from dfserve.export.checkpoint import labels_for, load_model, preprocessing_for, resolve
from dfserve.export.onnx_graph import export_onnx
from dfserve.export.parity import check_parity, write_parity_images
from dfserve.export.pipeline import BuildOptions, build
from dfserve.repository.configs import read_config
from dfserve.spec.model import ModelSpec
from tests.checkpoints import make_checkpoint

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("labels", "policy", "names"),
    [
        ("one", "shortest_edge", ["real", "fake"]),
        ("two", "fixed", ["real", "fake"]),
        ("five", "shortest_edge", ["cat", "dog", "bird", "fish", "horse"]),
        ("one", "fixed", ["real", "fake"]),
    ],
)
def test_build_proves_parity_and_writes_repository(tmp_path: Path, labels: str, policy: str, names: list[str]) -> None:
    folder = make_checkpoint(tmp_path / "ck", labels=labels, policy=policy)  # type: ignore[arg-type]
    result = build(BuildOptions(out=tmp_path / "repo", model=str(folder), parity_photos=3))

    report = json.loads((tmp_path / "repo" / "build_report.json").read_text())
    assert report["parity"]["max_abs_diff"] <= 1e-4
    assert report["parity"]["top1_agreement"] == 1.0
    assert report["parity"]["images"] >= 15
    assert report["random_weights"] is False and report["labels"] == names
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(report["versions"])
    assert report["timings_s"]["export"] > 0 and report["onnx_bytes"] > 0

    spec = ModelSpec.load(tmp_path / "repo")
    assert spec == result.spec and list(spec.labels.names) == names
    cfg = read_config(tmp_path / "repo" / "detector")
    assert cfg.platform == "ensemble" and list(cfg.output[0].dims) == [len(names)]
    labels_file = (tmp_path / "repo" / "detector" / "labels.txt").read_text().split()
    assert labels_file == names
    assert (tmp_path / "repo" / "vit" / "1" / "model.onnx").is_file()


def test_parity_check_catches_a_wrong_graph(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The proof can fail: a graph exported from other weights is refused, naming the images."""
    good = resolve(str(tiny_checkpoint))
    other = resolve(str(make_checkpoint(tmp_path / "other", seed=1)))
    spec = ModelSpec(source="x", labels=labels_for(good), preprocessing=preprocessing_for(good))
    wrong = export_onnx(load_model(other), spec, tmp_path / "wrong.onnx")
    images = write_parity_images(tmp_path / "imgs", photos=1)
    with pytest.raises(ParityError, match=r"beyond 0\.0001 on \d+/\d+ images: photo_astronaut\.jpg"):
        check_parity(good, load_model(good), spec, wrong, images)
    with pytest.raises(ParityError, match=r"\(resize mode 'box'; --resize-mode exact reproduces"):
        check_parity(good, load_model(good), spec, wrong, images, mode="box")


def test_random_weights_build_says_so(tmp_path: Path, tiny_checkpoint: Path) -> None:
    build(BuildOptions(out=tmp_path / "repo", model=str(tiny_checkpoint), random_weights=True, parity_photos=1))
    report = json.loads((tmp_path / "repo" / "build_report.json").read_text())
    assert report["random_weights"] is True
    assert ModelSpec.load(tmp_path / "repo").random_weights is True


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "build", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_build_and_progress(tmp_path: Path, tiny_checkpoint: Path) -> None:
    proc = _cli(
        *("--model", str(tiny_checkpoint), "--out", str(tmp_path / "repo")),
        *("--max-batch-size", "4", "--max-pixels", "1000000"),
    )
    assert proc.returncode == 0, proc.stderr
    for stage in ("checkpoint located", "ONNX exported", "parity with the reference pipeline", "written"):
        assert stage in proc.stderr
    assert read_config(tmp_path / "repo" / "vit").max_batch_size == 4
    assert ModelSpec.load(tmp_path / "repo").limits.max_pixels == 1_000_000


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "checkpoint folder not found"),
        ("corrupt", "corrupt safetensors file"),
        ("arch", "unsupported architecture"),
        ("unwritable", "cannot write to output folder"),
        ("offline", "--model DIR"),
        ("tensorrt", "TensorRT"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, case: str, expected: str) -> None:
    folder = make_checkpoint(tmp_path / "ck")
    out = tmp_path / "out"
    model = str(folder)
    if case == "missing":
        model = str(tmp_path / "absent")
    elif case == "corrupt":
        (folder / "model.safetensors").write_bytes(b"garbage")
    elif case == "arch":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["architectures"] = ["BeitForImageClassification"]
        (folder / "config.json").write_text(json.dumps(cfg))
    elif case == "unwritable":
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        out = blocker / "repo"  # a folder under a regular file cannot exist, even for root
    elif case == "offline":
        model = "buildborderless/CommunityForensics-DeepfakeDet-ViT"
    extra = ["--engine", "tensorrt"] if case == "tensorrt" else []
    proc = _cli("--model", model, "--out", str(out), *extra)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_parity_images_cover_the_awkward_cases(tmp_path: Path) -> None:
    from PIL import Image

    paths = write_parity_images(tmp_path, photos=2)
    modes = {Image.open(p).mode for p in paths}
    assert {"L", "LA", "P", "RGBA", "CMYK", "1", "RGB"} <= modes
    assert any(Image.open(p).getexif().get(0x0112) == 6 for p in paths)
    sizes = [Image.open(p).size for p in paths]
    assert min(w for w, _ in sizes) < 32 and max(w / h for w, h in sizes) > 10
    assert np.all([p.stat().st_size > 0 for p in paths])


@pytest.mark.parametrize(
    ("labels", "policy", "scale"),
    [("one", "shortest_edge", 10.0), ("one", "shortest_edge", 50.0), ("five", "fixed", 30.0)],
)
def test_default_build_passes_on_sensitive_heads_and_reports_every_mode(
    tmp_path: Path, labels: str, policy: str, scale: float
) -> None:
    """Heads 10–50x more sensitive than the random ones spread scores over (0, 1): the default (exact) build still
    passes its 1e-4 gate, and the report shows what box and draft would cost on these weights."""
    ckpt = make_checkpoint(tmp_path / "ckpt", labels=labels, policy=policy, head_scale=scale)  # type: ignore[arg-type]
    result = build(BuildOptions(out=tmp_path / "repo", model=str(ckpt), parity_photos=4))
    parity = result.report["parity"]
    assert result.spec.resize_mode == "exact" and parity["resize_mode"] == "exact"
    assert parity["max_abs_diff"] <= 1e-4 and parity["flips"] == 0
    assert set(parity["modes"]) == {"exact", "box", "draft"}
    assert parity["modes"]["exact"]["passes"] and parity["modes"]["exact"]["max_abs_diff"] == parity["max_abs_diff"]
    for mode in ("box", "draft"):
        figures = parity["modes"][mode]
        assert figures["images"] == parity["images"] and figures["max_abs_diff"] >= 0
    assert parity["modes"]["draft"]["max_abs_diff"] > parity["modes"]["exact"]["max_abs_diff"]


def test_build_needs_no_dev_package(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A clean `pip install '.[build]'` has no scikit-image: the build's photographs ship in the package."""
    code = (
        "import sys; sys.modules['skimage'] = None\n"  # any `import skimage` now raises ImportError
        "from dfserve.cli import main\n"
        f"sys.exit(main(['build', '--model', {str(tiny_checkpoint)!r}, '--out', {str(tmp_path / 'repo')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "repo" / "build_report.json").read_text())
    photos = [r["image"] for r in report["parity"]["per_image"] if r["image"].startswith("photo_")]
    assert len(photos) == 8

"""The exported graph: uint8 pixels in, probabilities out, numerically the PyTorch model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dfserve.export.checkpoint import labels_for, load_model, preprocessing_for, resolve
from dfserve.export.onnx_graph import export_onnx
from dfserve.preprocessing import normalize
from dfserve.spec.model import ModelSpec
from tests.checkpoints import make_checkpoint


def _export(folder: Path, out: Path) -> tuple[ModelSpec, object, ort.InferenceSession]:
    ckpt = resolve(str(folder))
    spec = ModelSpec(source=str(folder), labels=labels_for(ckpt), preprocessing=preprocessing_for(ckpt))
    model = load_model(ckpt)
    path = export_onnx(model, spec, out / "model.onnx")
    return spec, model, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("labels", "policy", "k"), [("one", "shortest_edge", 2), ("five", "fixed", 5)])
def test_graph_matches_pytorch(tmp_path: Path, labels: str, policy: str, k: int) -> None:
    folder = make_checkpoint(tmp_path / "ck", labels=labels, policy=policy)  # type: ignore[arg-type]
    spec, model, session = _export(folder, tmp_path)

    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("pixels", "tensor(uint8)", ["batch", 3, 32, 32])
    assert (out.name, out.type, out.shape) == ("scores", "tensor(float)", ["batch", k])
    graph = onnx.load(str(tmp_path / "model.onnx"))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17

    rng = np.random.default_rng(0)
    for batch in (1, 3):
        pixels = rng.integers(0, 256, (batch, 3, 32, 32), dtype=np.uint8)
        scores = session.run(None, {"pixels": pixels})[0]
        with torch.no_grad():
            x = torch.from_numpy(np.stack([normalize(p, spec.preprocessing) for p in pixels]))
            logits = model(pixel_values=x).logits  # type: ignore[operator]
        expected = (
            torch.cat([1 - torch.sigmoid(logits), torch.sigmoid(logits)], dim=1)
            if spec.labels.activation == "sigmoid"
            else torch.softmax(logits, dim=-1)
        ).numpy()
        assert scores.shape == (batch, k)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(scores, expected, atol=1e-5)

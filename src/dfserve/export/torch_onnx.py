"""A PyTorch classifier to a bare ONNX graph `pixel_values` FP32 [N,3,H,W] → `logits` FP32 [N,L].

PyTorch's own exporter (the TorchScript one, `dynamo=False`: what optimum's exporter called for ViT), then a check
of the exported graph against PyTorch on seeded inputs. dfserve used optimum for this; optimum-onnx pins
`transformers<4.58`, so it could not install beside Transformers 5, and for a single-input image classifier it
added nothing but that call. Transformers and timm classifiers go through the same function: each is wrapped
as a module whose `forward(pixel_values)` returns the logits tensor (`LogitsOnly`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from dfserve.errors import ExportError

log = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
VALIDATION_ATOL = 1e-4
"""Largest |Δlogit| allowed between PyTorch and ONNX Runtime on the exporter's check (optimum's value for ViT)."""


class LogitsOnly(torch.nn.Module):
    """`forward(pixel_values) -> logits` around a Transformers classifier (whose output is a ModelOutput) or a
    timm one (which returns the tensor): the one signature the exporter and the torch engine need."""

    def __init__(self, classifier: Any) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.classifier(pixel_values)
        logits = getattr(out, "logits", out)
        assert isinstance(logits, torch.Tensor)
        return logits


def export_logits(module: torch.nn.Module, input_hw: tuple[int, int], opset: int, path: Path) -> onnx.ModelProto:
    """Export `module` (pixel_values → logits) with a dynamic batch axis to `path`, check it, return the graph."""
    module = module.eval()
    h, w = input_hw
    dummy = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                (dummy,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise ExportError(f"PyTorch's ONNX export failed: {exc}") from exc
    validate(module, path, input_hw)
    return onnx.load(str(path))


def validate(module: torch.nn.Module, path: Path, input_hw: tuple[int, int], *, atol: float = VALIDATION_ATOL) -> float:
    """Run the exported graph and PyTorch on the same seeded inputs (a batch size other than the export's, so a
    batch axis frozen by tracing fails here); raise ExportError beyond `atol`. Returns the largest |Δlogit|."""
    import onnxruntime as ort

    h, w = input_hw
    x = torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = module(x).float().numpy()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    except Exception as exc:
        raise ExportError(f"the exported ONNX graph does not run in ONNX Runtime: {exc}") from exc
    if got.shape != expected.shape:
        raise ExportError(f"exported graph gives logits {got.shape}, PyTorch {expected.shape}")
    diff = float(np.abs(got - expected).max())
    if not diff <= atol:
        raise ExportError(f"exported graph differs from PyTorch by {diff:.2e} (> {atol:g}) on the same inputs")
    log.debug("ONNX export validated: max |Δlogit| %.2e", diff)
    return diff

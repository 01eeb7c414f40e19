"""The `vit` engine as a PyTorch module: UINT8 pixels in, FP32 scores out, exactly as the ONNX graph does.

The ONNX graph that dfserve builds is three parts composed: uint8 → rescale and normalise (the checkpoint's
processor values), the Hugging Face classifier, and the scoring (one logit served as [1 − p, p] through a
sigmoid, softmax otherwise). `ScoringModule` is the same three parts around the same Transformers model, so a
PyTorch engine (the GPU measurement script, a served torch engine) answers with the same tensors and the same
semantics; only the arithmetic may differ, and that is what the fidelity gates measure.

FP16 runs the classifier in half precision; the normalisation and the final sigmoid/softmax stay in FP32, as
the precision-sensitive parts of the FP16 ONNX graph do.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from dfserve.config import Labels, Preprocessing


class ScoringModule(torch.nn.Module):
    """uint8 [N,3,H,W] → FP32 probabilities [N,K] around a Transformers image classifier."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, classifier: Any, preprocessing: Preprocessing, labels: Labels, half: bool = False) -> None:
        super().__init__()
        self.classifier = classifier.half() if half else classifier.float()
        self.fp16 = half
        pp = preprocessing
        # the same operations, in the same order, as the ONNX graph's input part and `preprocessing.normalize`
        self.scale = float(pp.rescale_factor) if pp.do_rescale else 1.0
        mean = pp.mean if pp.do_normalize else (0.0, 0.0, 0.0)
        std = pp.std if pp.do_normalize else (1.0, 1.0, 1.0)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.sigmoid = labels.activation == "sigmoid"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.to(torch.float32) * self.scale - self.mean) / self.std
        if self.fp16:
            x = x.half()
        logits = self.classifier(pixel_values=x).logits.float()
        if self.sigmoid:
            p = torch.sigmoid(logits[:, :1])
            return torch.cat([1.0 - p, p], dim=1)
        return torch.softmax(logits, dim=1)


def sensitive_head(classifier: Any, scale: float) -> Any:
    """Multiply the classification head by `scale`: random weights give logits near 0, i.e. scores near 0.5
    that hide drift; a scaled head spreads them over (0, 1) so a measurement sees what a trained model would."""
    with torch.no_grad():
        classifier.classifier.weight.mul_(scale)
        classifier.classifier.bias.mul_(scale)
    return classifier


def use_sdpa(config: Any) -> Any:
    """Ask Transformers for PyTorch's scaled-dot-product attention (fused kernels on a GPU); the attribute name
    is the one Transformers 4.x and 5.x both read."""
    with contextlib.suppress(AttributeError, ValueError):  # a Transformers that decides on its own
        config._attn_implementation = "sdpa"
    return config

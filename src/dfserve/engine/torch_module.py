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

from dfserve.spec.model import Labels, Preprocessing


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


def load_classifier(folder: Any) -> Any:
    """The Transformers classifier saved in `folder` (config.json + safetensors) with SDPA attention, in eval
    mode: what the served torch engine loads from its repository."""
    from transformers import ViTForImageClassification

    return ViTForImageClassification.from_pretrained(
        str(folder), use_safetensors=True, attn_implementation="sdpa"
    ).eval()


def engine_for(classifier: Any, spec: Any, *, device: str = "cpu", precision: str = "fp32") -> ScoringModule:
    """`classifier` as the served engine of `spec` on `device`, in eval mode without gradients."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"the torch engine runs fp32 or fp16, not {precision!r}")
    if precision == "fp32":
        # FP32 means FP32: cuDNN runs the patch-embedding convolution in TF32 by default on Ampere and later,
        # which alone can move scores past the FP32 bar. The flags are process-wide, as the engine's process is.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    module = ScoringModule(classifier, spec.preprocessing, spec.labels, half=precision == "fp16").to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@torch.inference_mode()
def scores(engine: torch.nn.Module, pixels: Any, *, batch: int = 32) -> Any:
    """Scores [N,K] as float64 numpy for uint8 pixels [N,3,H,W] (numpy), in batches of `batch`."""
    import numpy as np

    device = next(engine.parameters()).device
    x = torch.as_tensor(np.ascontiguousarray(pixels))
    out = [engine(x[i : i + batch].to(device)).float().cpu().numpy() for i in range(0, x.shape[0], batch)]
    return np.concatenate(out).astype(np.float64)

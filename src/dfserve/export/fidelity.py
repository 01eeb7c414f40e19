"""How far one set of scores is from another, and whether that passes a bar.

Every comparison dfserve makes (a resize mode against the Transformers pipeline, an FP16 or INT8 graph against
FP32, a live server against the reference in `dfserve verify`) reduces to the same figures: the largest
|Δscore|, and the decisions that flip. A decision is what a user acts on: for a single-logit detector served as
[negative, positive] it is P(positive) ≥ 0.5, otherwise the arg-max. A flip on an image whose reference sits
within `LOW_MARGIN` of the boundary is reported apart: there any precision change may tip it, and it says
little about the engine. This module needs only numpy, so the SDK-side `verify` can use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dfserve.export.policy import DECODE_GPU_BAR, FIDELITY_BARS, FidelityBar
from dfserve.spec.model import Labels, ModelSpec

LOW_MARGIN = 1e-3
"""A reference decision this close to its boundary (|p − 0.5|, or top-1 minus top-2) is a low-margin one."""


def decisions(scores: np.ndarray, labels: Labels) -> np.ndarray:
    """The class index each row decides for: threshold 0.5 on P(positive) for one logit, else the arg-max."""
    scores = np.asarray(scores, dtype=np.float64)
    if labels.activation == "sigmoid":
        return (scores[:, 1] >= 0.5).astype(np.int64)
    return scores.argmax(axis=1)


def margins(scores: np.ndarray, labels: Labels) -> np.ndarray:
    """How far each row's decision is from flipping."""
    scores = np.asarray(scores, dtype=np.float64)
    if labels.activation == "sigmoid":
        return np.abs(scores[:, 1] - 0.5)
    top2 = np.sort(scores, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


@dataclass(frozen=True)
class ScoreDrift:
    """The figures of one comparison (candidate against reference) over `images` images."""

    images: int
    max_abs_diff: float
    mean_abs_diff: float
    flips: int
    """Decisions that differ from the reference's, low-margin ones included."""
    low_margin_flips: int
    """Of `flips`, those whose reference margin is below LOW_MARGIN."""
    agreement: float
    """Fraction of images whose decision agrees."""
    worst_image: str | None = None

    def as_report(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self, bar: FidelityBar) -> list[str]:
        """What fails `bar`, in words; empty when it passes."""
        out = []
        if not self.max_abs_diff <= bar.max_abs_diff:  # `not <=` also catches NaN
            where = f" (worst: {self.worst_image})" if self.worst_image else ""
            out.append(f"max |Δscore| {self.max_abs_diff:.3g} exceeds {bar.max_abs_diff:g}{where}")
        if self.agreement < bar.min_agreement:
            out.append(
                f"decision agreement {self.agreement:.2%} is below {bar.min_agreement:.2%} "
                f"({self.flips} flipped, {self.low_margin_flips} of them within {LOW_MARGIN:g} of the boundary)"
            )
        return out

    def passes(self, bar: FidelityBar) -> bool:
        return not self.problems(bar)


def compare(reference: np.ndarray, candidate: np.ndarray, labels: Labels, names: list[str] | None = None) -> ScoreDrift:
    """ScoreDrift of `candidate` scores from `reference` scores (both [N, K] probabilities, same row order)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 2 or ref.shape[0] == 0:
        raise ValueError(f"cannot compare scores of shapes {ref.shape} and {cand.shape}")
    per_image = np.abs(ref - cand).max(axis=1)
    per_image = np.where(np.isnan(per_image), np.inf, per_image)
    flipped = decisions(ref, labels) != decisions(cand, labels)
    low = flipped & (margins(ref, labels) < LOW_MARGIN)
    worst = int(per_image.argmax())
    return ScoreDrift(
        images=int(ref.shape[0]),
        max_abs_diff=float(per_image.max()),
        mean_abs_diff=float(per_image.mean()),
        flips=int(flipped.sum()),
        low_margin_flips=int(low.sum()),
        agreement=float(1.0 - flipped.mean()),
        worst_image=names[worst] if names else None,
    )


def bar_for(precision: str) -> FidelityBar:
    """The bar a model served in `precision` must pass (`dfserve.export.policy.FIDELITY_BARS`)."""
    try:
        return FIDELITY_BARS[precision]
    except KeyError as exc:
        raise ValueError(f"no fidelity bar for precision {precision!r}; known: {sorted(FIDELITY_BARS)}") from exc


def served_bar(spec: ModelSpec) -> tuple[str, FidelityBar]:
    """The bar a deployment of `spec` is held to, with its name: its precision's, and for a GPU-decoding one the
    decode bar (`FIDELITY_BARS["decode_gpu"]`), never stricter than the precision's own."""
    precision = bar_for(spec.precision)
    if spec.decode != "gpu":
        return spec.precision, precision
    decode = bar_for(DECODE_GPU_BAR)
    bar = FidelityBar(
        max_abs_diff=max(decode.max_abs_diff, precision.max_abs_diff),
        min_agreement=min(decode.min_agreement, precision.min_agreement),
    )
    return f"{spec.precision}+{DECODE_GPU_BAR}", bar

"""Drift figures and bars: decisions at 0.5 for one logit, arg-max otherwise, low-margin flips apart."""

from __future__ import annotations

import numpy as np
import pytest

from dfserve.export.fidelity import LOW_MARGIN, bar_for, compare
from dfserve.export.policy import FIDELITY_BARS
from dfserve.spec.model import Labels

ONE = Labels(names=("real", "fake"), activation="sigmoid", num_logits=1)
THREE = Labels(names=("a", "b", "c"), activation="softmax", num_logits=3)


def pairs(p: list[float]) -> np.ndarray:
    return np.array([[1 - x, x] for x in p])


def test_identical_scores_pass_every_bar() -> None:
    ref = pairs([0.1, 0.6, 0.99])
    drift = compare(ref, ref.copy(), ONE)
    assert drift.max_abs_diff == 0 and drift.flips == 0 and drift.agreement == 1.0
    assert all(drift.passes(bar) for bar in FIDELITY_BARS.values())


def test_one_logit_flips_at_the_threshold_and_low_margin_flips_are_counted_apart() -> None:
    ref = pairs([0.4999, 0.30, 0.9])
    cand = pairs([0.5001, 0.55, 0.9])
    drift = compare(ref, cand, ONE, names=["near", "far", "same"])
    assert drift.flips == 2 and drift.low_margin_flips == 1
    assert drift.worst_image == "far"
    assert drift.max_abs_diff == pytest.approx(0.25)
    problems = drift.problems(bar_for("fp16"))
    assert any("exceeds 0.01 (worst: far)" in p for p in problems)
    assert any("2 flipped, 1 of them within" in p for p in problems)
    assert LOW_MARGIN == 1e-3


def test_softmax_decisions_are_the_arg_max() -> None:
    ref = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    cand = np.array([[0.3, 0.5, 0.2], [0.1, 0.2, 0.7]])
    drift = compare(ref, cand, THREE)
    assert drift.flips == 1 and drift.agreement == 0.5


def test_nan_never_passes_and_shapes_must_match() -> None:
    ref = pairs([0.2, 0.3])
    cand = ref.copy()
    cand[1, 1] = np.nan
    assert not compare(ref, cand, ONE).passes(bar_for("int8"))
    with pytest.raises(ValueError, match="shapes"):
        compare(ref, ref[:1], ONE)
    with pytest.raises(ValueError, match="no fidelity bar"):
        bar_for("fp8")

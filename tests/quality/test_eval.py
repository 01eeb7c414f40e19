"""Evaluation metrics on numbers worked out by hand, the report files, and folder collection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dfserve.errors import EvalError
from dfserve.quality.eval import collect_labelled, compute_metrics, plot_report, write_report

Y = ["real", "real", "fake", "fake", "fake"]
P_FAKE = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
SCORES = np.stack([1 - P_FAKE, P_FAKE], axis=1)


def test_binary_metrics_match_the_hand_computed_values() -> None:
    r = compute_metrics(Y, SCORES, ["real", "fake"], positive="fake")
    # predictions (argmax): real, fake, real, fake, fake -> 3 of 5 right; of 3 "fake" calls 2 are right
    assert (r.average, r.positive_label, r.n_images) == ("binary", "fake", 5)
    assert r.accuracy == pytest.approx(3 / 5)
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(2 / 3) and r.f1 == pytest.approx(2 / 3)
    assert r.roc_auc == pytest.approx(5 / 6)  # 5 of the 6 (fake, real) pairs are ranked right
    assert r.average_precision == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert r.confusion_matrix == [[1, 1], [1, 2]]
    assert r.counts == {"real": 2, "fake": 3}
    sweep = {p.threshold: p for p in r.threshold_sweep}
    assert len(sweep) == 19 and min(sweep) == 0.05 and max(sweep) == 0.95
    assert (sweep[0.05].recall, sweep[0.05].precision, sweep[0.05].false_positive_rate) == (1.0, 0.6, 1.0)
    assert sweep[0.5].accuracy == pytest.approx(r.accuracy)
    assert (sweep[0.85].recall, sweep[0.85].precision, sweep[0.85].false_positive_rate) == (
        pytest.approx(1 / 3),
        1.0,
        0.0,
    )


def test_multiclass_uses_macro_averages_and_one_vs_rest_auc() -> None:
    labels = ["cat", "dog", "bird"]
    y = ["cat", "dog", "bird", "cat", "bird", "dog"]
    scores = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.5, 0.2], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]]
    )
    r = compute_metrics(y, scores, labels)
    # one cat is called dog: cat recall 1/2, dog precision 2/3, everything else perfect
    assert r.accuracy == pytest.approx(5 / 6)
    assert r.recall == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert r.precision == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert r.confusion_matrix == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    assert r.average == "macro" and r.positive_label is None and r.threshold_sweep == []
    assert r.roc_auc is not None and 0.9 < r.roc_auc <= 1.0


def test_undefined_metrics_are_none_with_a_note() -> None:
    r = compute_metrics(["real", "real"], np.array([[0.9, 0.1], [0.3, 0.7]]), ["real", "fake"], positive="fake")
    assert r.roc_auc is None and r.average_precision is None
    assert any("ROC-AUC undefined" in n for n in r.notes)
    assert r.accuracy == 0.5


@pytest.mark.parametrize(
    ("y", "scores", "message"),
    [
        (["real"], np.zeros((1, 3)), r"scores must be \[1, 2\]"),
        (["real", "other"], np.zeros((2, 2)), "not among the model's labels"),
        ([], np.zeros((0, 2)), "no successfully classified images"),
    ],
)
def test_bad_metric_inputs_are_refused(y: list[str], scores: np.ndarray, message: str) -> None:
    with pytest.raises(EvalError, match=message):
        compute_metrics(y, scores, ["real", "fake"])


def test_report_files(tmp_path: Path) -> None:
    report = compute_metrics(Y, SCORES, ["real", "fake"], positive="fake")
    json_path, png_path = write_report(report, Y, SCORES, tmp_path / "out")
    assert json_path.read_text().count('"threshold"') == 19 + 1  # the sweep and the operating point
    with Image.open(png_path) as img:
        assert img.format == "PNG" and img.width > 500
        assert len(set(np.asarray(img.convert("L")).ravel().tolist())) > 10  # something was drawn
    multi = compute_metrics(["a", "b", "c"], np.eye(3), ["a", "b", "c"])
    assert plot_report(multi, ["a", "b", "c"], np.eye(3), tmp_path / "multi.png").stat().st_size > 1000


def test_collect_labelled(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="no sub-folders"):
        collect_labelled(tmp_path, ["real", "fake"])
    (tmp_path / "real" / "nested").mkdir(parents=True)
    (tmp_path / "fake").mkdir()
    with pytest.raises(EvalError, match="no images"):
        collect_labelled(tmp_path, ["real", "fake"])
    Image.new("RGB", (8, 8)).save(tmp_path / "real" / "nested" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "fake" / "b.JPG")
    (tmp_path / "fake" / "readme.txt").write_text("not picked up from a folder")
    assert collect_labelled(tmp_path, ["real", "fake"]) == [
        (tmp_path / "fake" / "b.JPG", "fake"),
        (tmp_path / "real" / "nested" / "a.png", "real"),
    ]
    (tmp_path / "cats").mkdir()
    with pytest.raises(EvalError, match=r"cats .* not labels of the served model"):
        collect_labelled(tmp_path, ["real", "fake"])


def test_target_fpr_picks_the_lowest_threshold_within_it_and_marks_the_operating_point() -> None:
    y = ["real"] * 4 + ["fake"] * 4
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.6, 0.8, 0.9])
    scores = np.stack([1 - p, p], axis=1)
    r = compute_metrics(y, scores, ["real", "fake"], positive="fake", target_fpr=0.25)
    op = r.operating_point
    assert op is not None and r.threshold_rule == "target FPR <= 0.25"
    # one of four negatives (0.7) may pass: the threshold sits just above the next negative (0.3)
    assert 0.3 < op.threshold <= 0.4
    assert (op.false_positive_rate, op.recall, op.precision) == (0.25, 1.0, pytest.approx(0.8))
    assert r.confusion_matrix_at_threshold == [[3, 1], [0, 4]]
    strict = compute_metrics(y, scores, ["real", "fake"], positive="fake", target_fpr=0.0).operating_point
    assert strict is not None and strict.false_positive_rate == 0.0 and strict.recall == 0.5
    fixed = compute_metrics(y, scores, ["real", "fake"], positive="fake", threshold=0.65)
    assert fixed.threshold_rule == "fixed" and fixed.confusion_matrix_at_threshold == [[3, 1], [2, 2]]


def test_folders_match_labels_in_any_case_and_through_aliases(tmp_path: Path) -> None:
    for folder in ("REAL", "Generated"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "a.png")
    items = collect_labelled(tmp_path, ["real", "fake"], {"generated": "fake"})
    assert sorted(label for _, label in items) == ["fake", "real"]
    with pytest.raises(EvalError, match="Generated"):
        collect_labelled(tmp_path, ["real", "fake"])


def test_the_png_has_five_panels(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    y = ["real"] * 60 + ["fake"] * 60
    p = np.clip(np.concatenate([rng.normal(0.3, 0.12, 60), rng.normal(0.7, 0.12, 60)]), 0, 1)
    scores = np.stack([1 - p, p], axis=1)
    report = compute_metrics(y, scores, ["real", "fake"], positive="fake", target_fpr=0.05)
    drawn: list[Any] = []
    real_savefig = plt.Figure.savefig

    def spy(fig: Any, *args: Any, **kwargs: Any) -> None:
        drawn.append([ax.get_title() for ax in fig.axes if ax.axison or ax.get_title() == "summary"])
        real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = spy  # type: ignore[method-assign]
    try:
        path = plot_report(report, y, scores, tmp_path / "eval.png")
    finally:
        plt.Figure.savefig = real_savefig  # type: ignore[method-assign]
    titles = drawn[0]
    for expected in ("ROC", "precision-recall", "confusion matrix at", "threshold sweep", "score histograms"):
        assert any(t.startswith(expected) for t in titles), (expected, titles)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 1000


def test_one_threshold_per_report_and_a_caution_when_the_folder_is_too_small() -> None:
    """The headline figures and the matrix are those of the operating point the report names, not of 0.5 beside
    a chosen 0.35; a target FPR finer than 1/negatives is called out, as are classes too small to read rates from."""
    y = ["real"] * 4 + ["fake"] * 4
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.6, 0.8, 0.9])
    scores = np.stack([1 - p, p], axis=1)
    r = compute_metrics(y, scores, ["real", "fake"], positive="fake", target_fpr=0.25)
    assert r.operating_point is not None and r.operating_point.threshold < 0.5
    assert r.confusion_matrix == r.confusion_matrix_at_threshold == [[3, 1], [0, 4]]
    assert r.accuracy == pytest.approx(7 / 8) and r.recall == 1.0 and r.precision == pytest.approx(0.8)
    assert not any("steps of 0.25, coarser" in n for n in r.notes)
    fine = compute_metrics(y, scores, ["real", "fake"], positive="fake", target_fpr=0.01)
    assert any("only 4 'real' images" in n and "at least 100 are needed" in n for n in fine.notes), fine.notes
    assert any("4 'fake' images: the recall is uncertain" in n for n in fine.notes)

"""`dfserve eval`: reproduce a model card's numbers on a labelled folder, through the real server.

The folder holds one sub-folder per label (``real/``, ``fake/``); every image in it is classified with the SDK
and compared with its folder's label. The metrics are scikit-learn's (accuracy, precision, recall, F1, ROC-AUC,
average precision, confusion matrix), never hand-written, so the figures match what a model card computed
with the same library. A binary detector also gets a threshold sweep on P(positive); the report is written as
JSON and drawn as one PNG of five panels with matplotlib's Agg backend: the ROC and precision-recall curves with
the operating point marked, the confusion matrix at the chosen threshold, the threshold sweep (F1, precision,
recall, FPR) and per-label score histograms whose bins fit the data. The threshold is given (`--threshold`,
default 0.5) or chosen as the lowest one whose false positive rate stays within `--target-fpr`.

scikit-learn and matplotlib are the `dfserve[eval]` extra; they are imported when a function here runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from dfserve.client._client import Client
from dfserve.client._constants import ProgressCallback
from dfserve.client._types import Prediction
from dfserve.client.files import find_images
from dfserve.errors import EvalError
from dfserve.spec.model import ModelSpec

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))
REPORT_JSON = "eval.json"
REPORT_PNG = "eval.png"


class SweepPoint(BaseModel):
    """Binary metrics when an image counts as positive at P(positive) >= threshold."""

    threshold: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    false_positive_rate: float


class EvalReport(BaseModel):
    """What `dfserve eval` prints and writes as JSON."""

    model_config = ConfigDict(protected_namespaces=())

    labels: list[str]
    """The model's labels, in score order (the confusion matrix's row and column order)."""
    positive_label: str | None
    """The positive class of a binary detector (the one ROC-AUC and the sweep are about); None otherwise."""
    average: str
    """How precision/recall/F1 combine classes: 'binary' (of the positive label) or 'macro'."""
    n_images: int
    """Images classified successfully (the metrics' sample size)."""
    counts: dict[str, int]
    """Successfully classified images per true label."""
    failed: list[dict[str, str]]
    """Images that could not be classified: path and error. They are left out of the metrics."""
    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float | None
    """None when undefined (a single class in the data); `notes` says why."""
    average_precision: float | None
    confusion_matrix: list[list[int]]
    """Rows: true label, columns: predicted label, both in `labels` order."""
    threshold_sweep: list[SweepPoint]
    operating_point: SweepPoint | None = None
    """A binary detector's figures at the chosen threshold (P(positive) >= threshold counts as positive)."""
    threshold_rule: str | None = None
    """How the threshold was chosen: 'fixed' or 'target FPR <= x'."""
    confusion_matrix_at_threshold: list[list[int]] | None = None
    """Rows: true [negative, positive], columns: predicted, at the operating point (binary detectors)."""
    model_name: str | None = None
    model_version: str | None = None
    random_weights: bool | None = None
    notes: list[str] = []


def folder_labels(labels: Sequence[str], aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """Folder name (lower-cased) -> model label: every label matches its own name in any case (``REAL/``), and
    `aliases` add other names (``--positive fake,FAKE,generated``)."""
    names = {label.lower(): label for label in labels}
    for alias, label in (aliases or {}).items():
        if label not in labels:
            raise EvalError(f"{label!r} is not a label of the served model ({', '.join(labels)})")
        names[alias.lower()] = label
    return names


def collect_labelled(
    root: Path, labels: Sequence[str], aliases: Mapping[str, str] | None = None
) -> list[tuple[Path, str]]:
    """(image path, true label) for every image under ``root/<label>/``, sorted for a stable order; folder names
    are matched to labels case-insensitively, and through `aliases`."""
    names = folder_labels(labels, aliases)
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"{root} is not a folder: expected one sub-folder per label ({', '.join(labels)})")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise EvalError(f"{root} has no sub-folders: expected one per label ({', '.join(labels)})")
    unknown = [d.name for d in folders if d.name.lower() not in names]
    if unknown:
        raise EvalError(
            f"sub-folders {', '.join(unknown)} of {root} are not labels of the served model ({', '.join(labels)})"
        )
    items = [(Path(p), names[d.name.lower()]) for d in folders for p in find_images([d])]
    if not items:
        raise EvalError(f"no images under {root} (looked in {', '.join(d.name for d in folders)})")
    return items


def compute_metrics(
    y_true: Sequence[str],
    scores: np.ndarray,
    labels: Sequence[str],
    positive: str | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    threshold: float = 0.5,
    target_fpr: float | None = None,
) -> EvalReport:
    """scikit-learn's metrics for true labels and score rows [N, K] in `labels` order.

    With two labels the detector is binary: `positive` (default: the second label) is the class of
    precision, recall, ROC-AUC, average precision and the threshold sweep. With more, precision/recall/F1 are
    macro averages and ROC-AUC / average precision are one-vs-rest macro averages.
    """
    from sklearn import metrics
    from sklearn.preprocessing import label_binarize

    labels = list(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != (len(y_true), len(labels)):
        raise EvalError(f"scores must be [{len(y_true)}, {len(labels)}], got {list(scores.shape)}")
    if len(y_true) == 0:
        raise EvalError("no successfully classified images to evaluate")
    bad = sorted(set(y_true) - set(labels))
    if bad:
        raise EvalError(f"true labels {bad} are not among the model's labels {labels}")
    y_true = list(y_true)
    y_pred = [labels[i] for i in scores.argmax(axis=1)]  # a binary detector's are replaced below, at its threshold
    notes: list[str] = []
    present = sorted(set(y_true), key=labels.index)
    binary = len(labels) == 2
    sweep: list[SweepPoint] = []
    operating: SweepPoint | None = None
    rule: str | None = None
    matrix_at: list[list[int]] | None = None
    if binary:
        positive = positive or labels[1]
        if positive not in labels:
            raise EvalError(f"positive label {positive!r} is not among {labels}")
        pos = labels.index(positive)
        p = scores[:, pos]
        truth = np.array([y == positive for y in y_true])
        average = "binary"
        kwargs: dict[str, Any] = {"pos_label": positive, "average": "binary", "zero_division": 0}
        if len(present) < 2:
            roc_auc = None
            notes.append(f"ROC-AUC undefined: only {present[0]!r} images")
        else:
            roc_auc = float(metrics.roc_auc_score(truth, p))
        if truth.any():
            average_precision: float | None = float(metrics.average_precision_score(truth, p))
        else:
            average_precision = None
            notes.append(f"average precision undefined: no {positive!r} images")
        sweep = [_sweep_point(metrics, truth, p, float(t)) for t in thresholds]
        rule = "fixed"
        if target_fpr is not None:
            threshold, rule = _threshold_for_fpr(truth, p, target_fpr), f"target FPR <= {target_fpr:g}"
            if not (~truth).any():
                notes.append(f"no negative images: the target FPR cannot choose a threshold; {threshold:g} used")
        operating = _sweep_point(metrics, truth, p, threshold)
        matrix_at = metrics.confusion_matrix(truth, p >= threshold, labels=[False, True]).tolist()
        # One threshold per report: the headline figures and the matrix are those of the operating point.
        negative = labels[1 - pos]
        y_pred = [positive if s >= threshold else negative for s in p]
        notes += _sample_size_notes(truth, positive, negative, target_fpr)
    else:
        positive = None
        average = "macro"
        kwargs = {"labels": labels, "average": "macro", "zero_division": 0}
        onehot = label_binarize(y_true, classes=labels)
        try:
            roc_auc = float(metrics.roc_auc_score(onehot, scores, average="macro", multi_class="ovr"))
        except ValueError as exc:
            roc_auc = None
            notes.append(f"ROC-AUC undefined: {exc}")
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = metrics.average_precision_score(onehot, scores, average=None)
        ap = np.atleast_1d(ap)
        kept = [float(v) for v, name in zip(ap, labels, strict=True) if name in present and np.isfinite(v)]
        average_precision = float(np.mean(kept)) if kept else None
        notes.append("threshold sweep is for binary detectors only")
    return EvalReport(
        labels=labels,
        positive_label=positive,
        average=average,
        n_images=len(y_true),
        counts={name: y_true.count(name) for name in labels},
        failed=[],
        accuracy=float(metrics.accuracy_score(y_true, y_pred)),
        precision=float(metrics.precision_score(y_true, y_pred, **kwargs)),
        recall=float(metrics.recall_score(y_true, y_pred, **kwargs)),
        f1=float(metrics.f1_score(y_true, y_pred, **kwargs)),
        roc_auc=roc_auc,
        average_precision=average_precision,
        confusion_matrix=metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        threshold_sweep=sweep,
        operating_point=operating,
        threshold_rule=rule,
        confusion_matrix_at_threshold=matrix_at,
        notes=notes,
    )


SMALL_CLASS = 30
"""Below this many images of a class, its rates move in coarse steps and the report says so."""


def _sample_size_notes(truth: np.ndarray, positive: str, negative: str, target_fpr: float | None) -> list[str]:
    """Cautions where the folder is too small for the figures read off it: the false positive rate moves in
    steps of 1/negatives (4 negatives: 0, 0.25, 0.5, ...), so a target FPR finer than that step cannot be met
    or measured; recall likewise moves in steps of 1/positives."""
    negatives, positives = int((~truth).sum()), int(truth.sum())
    notes = []
    if negatives and target_fpr is not None and 0 < target_fpr < 1 / negatives:
        notes.append(
            f"only {negatives} {negative!r} images: the false positive rate moves in steps of {1 / negatives:.3g}, "
            f"coarser than the target FPR {target_fpr:g}; at least {int(np.ceil(1 / target_fpr))} are needed"
        )
    for count, name, rate in ((negatives, negative, "false positive rate"), (positives, positive, "recall")):
        if 0 < count < SMALL_CLASS:
            notes.append(f"{count} {name!r} images: the {rate} is uncertain (steps of {1 / count:.2g})")
    return notes


def _sweep_point(metrics: Any, truth: np.ndarray, p: np.ndarray, threshold: float) -> SweepPoint:
    guess = p >= threshold
    negatives = int((~truth).sum())
    return SweepPoint(
        threshold=threshold,
        accuracy=float(metrics.accuracy_score(truth, guess)),
        precision=float(metrics.precision_score(truth, guess, zero_division=0)),
        recall=float(metrics.recall_score(truth, guess, zero_division=0)),
        f1=float(metrics.f1_score(truth, guess, zero_division=0)),
        false_positive_rate=float((guess & ~truth).sum() / negatives) if negatives else 0.0,
    )


def _threshold_for_fpr(truth: np.ndarray, p: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold (most recall) whose false positive rate is at most `target_fpr`: a candidate is
    every observed score, and just above the highest negative score (FPR 0)."""
    if not 0.0 <= target_fpr <= 1.0:
        raise EvalError(f"--target-fpr must be within [0, 1], got {target_fpr}")
    negatives = np.sort(p[~truth])
    if negatives.size == 0:
        return 0.5
    allowed = int(np.floor(target_fpr * negatives.size + 1e-9))  # negatives that may score >= threshold
    if allowed >= negatives.size:
        return float(min(p.min(), negatives[0]))
    # strictly above the (allowed+1)-th highest negative score: at most `allowed` negatives pass
    return float(np.nextafter(negatives[negatives.size - 1 - allowed], np.inf))


def plot_report(report: EvalReport, y_true: Sequence[str], scores: np.ndarray, path: Path) -> Path:
    """Five panels in one PNG, drawn with scikit-learn's displays: ROC (`RocCurveDisplay`), precision-recall
    (`PrecisionRecallDisplay`, a step curve as average precision computes it), both with the operating point
    marked; the confusion matrix at the report's one threshold (`ConfusionMatrixDisplay`); the threshold sweep;
    and score histograms per true label with bins fitted to the data and whole-image counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    labels = report.labels
    scores = np.asarray(scores, dtype=np.float64)
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    ax_roc, ax_pr, ax_cm, ax_sweep, ax_hist, ax_text = axes.ravel()
    op = report.operating_point
    if report.positive_label is not None:
        pos = labels.index(report.positive_label)
        truth = np.array([y == report.positive_label for y in y_true])
        p = scores[:, pos]
        if report.roc_auc is not None:
            RocCurveDisplay.from_predictions(truth, p, ax=ax_roc, name=report.positive_label, plot_chance_level=True)
        if report.average_precision is not None:
            PrecisionRecallDisplay.from_predictions(
                truth, p, ax=ax_pr, name=report.positive_label, plot_chance_level=True
            )
        if op is not None:
            point = f"threshold {op.threshold:.3g}"
            ax_roc.plot([op.false_positive_rate], [op.recall], "o", color="red", label=point)
            ax_pr.plot([op.recall], [op.precision], "o", color="red", label=point)
        matrix = np.asarray(report.confusion_matrix_at_threshold or [[0, 0], [0, 0]])
        cm_title = f"confusion matrix at P({report.positive_label}) >= {op.threshold:.3g}" if op else "confusion matrix"
        _draw_sweep(ax_sweep, report)
        groups = [(f"true {name}", p[np.array([y == name for y in y_true])]) for name in labels]
        hist_x = f"P({report.positive_label})"
    else:
        for k, name in enumerate(labels):
            truth = np.array([y == name for y in y_true])
            if truth.any() and not truth.all():
                RocCurveDisplay.from_predictions(truth, scores[:, k], ax=ax_roc, name=f"{name} vs rest")
                PrecisionRecallDisplay.from_predictions(truth, scores[:, k], ax=ax_pr, name=f"{name} vs rest")
        matrix = np.asarray(report.confusion_matrix)
        cm_title = "confusion matrix (arg-max)"
        ax_sweep.text(0.5, 0.5, "threshold sweep: binary detectors only", ha="center", va="center")
        ax_sweep.set_axis_off()
        groups = [(name, scores[np.array([y == name for y in y_true]), k]) for k, name in enumerate(labels)]
        hist_x = "score of the true label"
    ax_roc.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_pr.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title="precision-recall")
    ConfusionMatrixDisplay(matrix, display_labels=labels).plot(ax=ax_cm, cmap="Blues", colorbar=False)
    ax_cm.set_title(cm_title)
    _draw_histograms(ax_hist, groups, hist_x)
    ax_hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    _draw_summary(ax_text, report)
    for ax in (ax_roc, ax_pr, ax_hist):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right" if ax is not ax_hist else "best", fontsize="small")
    at = f" at threshold {op.threshold:.3g}" if op is not None else ""
    title = (
        f"{report.model_name or 'model'}: accuracy {report.accuracy:.3f}, F1 {report.f1:.3f}{at}, n={report.n_images}"
    )
    if report.random_weights:
        title += " (RANDOM WEIGHTS)"
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


SWEEP_STYLES = (
    ("F1", "f1", "-", "o"),
    ("precision", "precision", "--", "s"),
    ("recall", "recall", "-.", "^"),
    ("FPR", "false_positive_rate", ":", "v"),
)
"""Each curve of the sweep its own line style and marker, so curves that coincide stay visible."""


def _draw_sweep(ax: Any, report: EvalReport) -> None:
    points = sorted(report.threshold_sweep, key=lambda q: q.threshold)
    x = [q.threshold for q in points]
    for name, attr, style, marker in SWEEP_STYLES:
        ax.plot(x, [getattr(q, attr) for q in points], linestyle=style, marker=marker, markersize=4, label=name)
    if report.operating_point is not None:
        ax.axvline(report.operating_point.threshold, color="red", linestyle=":", label=report.threshold_rule)
    ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel=f"threshold on P({report.positive_label})", title="threshold sweep")
    ax.legend(loc="best", fontsize="small")


def _draw_histograms(ax: Any, groups: Sequence[tuple[str, np.ndarray]], xlabel: str) -> None:
    """Bins from numpy's 'auto' rule over the scores actually seen (not fixed 0.05 steps across [0, 1]); each
    label in its own colour with an outline, so overlapping bars do not blend into one."""
    seen = [values for _, values in groups if values.size]
    if seen:
        everything = np.concatenate(seen)
        low, high = float(everything.min()), float(everything.max())
        if high - low < 1e-9:
            low, high = low - 0.005, high + 0.005
        bins = np.histogram_bin_edges(everything, bins="auto", range=(low, high))[:101]
        for k, (name, values) in enumerate(groups):
            if values.size:
                colour = f"C{k}"
                ax.hist(values, bins=bins, alpha=0.45, color=colour, label=f"{name} (n={values.size})")
                ax.hist(values, bins=bins, histtype="step", color=colour, linewidth=1.5)
    ax.set(xlabel=xlabel, ylabel="images", title="score histograms per true label")


def _draw_summary(ax: Any, report: EvalReport) -> None:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = [f"{name}: {fmt(getattr(report, name))}" for name in ("accuracy", "precision", "recall", "f1")]
    lines += [f"ROC-AUC: {fmt(report.roc_auc)}", f"average precision: {fmt(report.average_precision)}"]
    op = report.operating_point
    if op is not None:
        lines += [
            "",
            f"operating point ({report.threshold_rule}):",
            f"  threshold {op.threshold:.4g}",
            f"  precision {op.precision:.4f}  recall {op.recall:.4f}",
            f"  F1 {op.f1:.4f}  FPR {op.false_positive_rate:.4f}",
        ]
    lines += ["", "images: " + ", ".join(f"{k} {v}" for k, v in report.counts.items())]
    if report.failed:
        lines.append(f"failed: {len(report.failed)}")
    ax.text(0.02, 0.98, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=10)
    ax.set_axis_off()
    ax.set_title("summary")


def evaluate_folder(
    client: Client,
    root: Path,
    *,
    concurrency: int = 8,
    progress: ProgressCallback | None = None,
    positive: Sequence[str] = (),
    threshold: float = 0.5,
    target_fpr: float | None = None,
) -> tuple[EvalReport, list[str], np.ndarray]:
    """Classify every image under ``root/<label>/`` and compute the report. Returns (report, y_true, scores).

    `positive` names the positive class first (a model label, default the spec's), then other folder names
    that mean it (``["fake", "FAKE", "generated"]``)."""
    spec: ModelSpec = client.model_spec()
    labels = list(spec.labels.names)
    positive_label = positive[0] if positive else spec.labels.positive
    if positive and positive_label not in labels:
        raise EvalError(f"--positive: {positive_label!r} is not a label of the served model ({', '.join(labels)})")
    aliases = dict.fromkeys(positive[1:], positive_label) if positive_label else {}
    items = collect_labelled(root, labels, aliases)
    results = client.classify_many([p for p, _ in items], concurrency=concurrency, progress=progress)
    y_true: list[str] = []
    rows: list[list[float]] = []
    failed: list[dict[str, str]] = []
    first: Prediction | None = None
    for (path, label), result in zip(items, results, strict=True):
        if isinstance(result, Prediction):
            first = first or result
            y_true.append(label)
            rows.append([result.scores[name] for name in labels])
        else:
            failed.append({"path": str(path), "error": str(result)})
    if not rows:
        raise EvalError(f"all {len(items)} images under {root} failed; first error: {failed[0]['error']}")
    scores = np.asarray(rows, dtype=np.float64)
    report = compute_metrics(y_true, scores, labels, positive_label, threshold=threshold, target_fpr=target_fpr)
    report.failed = failed
    if first is not None:
        report.model_name, report.model_version = first.model_name, first.model_version
    report.random_weights = spec.random_weights
    if spec.random_weights:
        report.notes.append("the served model has random weights: these figures mean nothing")
    return report, y_true, scores


def write_report(report: EvalReport, y_true: Sequence[str], scores: np.ndarray, out: Path) -> tuple[Path, Path]:
    """Write ``eval.json`` and ``eval.png`` into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / REPORT_JSON
    json_path.write_text(json.dumps(report.model_dump(), indent=2) + "\n")
    png_path = plot_report(report, y_true, scores, out / REPORT_PNG)
    return json_path, png_path

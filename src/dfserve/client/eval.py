"""`dfserve eval`: reproduce a model card's numbers on a labelled folder, through the real server.

The folder holds one sub-folder per label (``real/``, ``fake/``); every image in it is classified with the SDK
and compared with its folder's label. The metrics are scikit-learn's (accuracy, precision, recall, F1, ROC-AUC,
average precision, confusion matrix), never hand-written, so the figures match what a model card computed
with the same library. A binary detector also gets a threshold sweep on P(positive); the report is written as
JSON and drawn as a PNG (ROC curve and per-label score histograms) with matplotlib's Agg backend.

scikit-learn and matplotlib are the `dfserve[eval]` extra; they are imported when a function here runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from dfserve.client._client import Client
from dfserve.client._constants import ProgressCallback
from dfserve.client._exceptions import DfserveClientError
from dfserve.client._types import Prediction
from dfserve.client.files import find_images
from dfserve.config import ModelSpec

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))
REPORT_JSON = "eval.json"
REPORT_PNG = "eval.png"


class EvalError(DfserveClientError):
    """The folder cannot be evaluated (no label sub-folders, labels the model does not know, no images)."""


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
    model_name: str | None = None
    model_version: str | None = None
    random_weights: bool | None = None
    notes: list[str] = []


def collect_labelled(root: Path, labels: Sequence[str]) -> list[tuple[Path, str]]:
    """(image path, true label) for every image under ``root/<label>/``, sorted for a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"{root} is not a folder: expected one sub-folder per label ({', '.join(labels)})")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise EvalError(f"{root} has no sub-folders: expected one per label ({', '.join(labels)})")
    unknown = [d.name for d in folders if d.name not in labels]
    if unknown:
        raise EvalError(
            f"sub-folders {', '.join(unknown)} of {root} are not labels of the served model ({', '.join(labels)})"
        )
    items = [(Path(p), d.name) for d in folders for p in find_images([d])]
    if not items:
        raise EvalError(f"no images under {root} (looked in {', '.join(d.name for d in folders)})")
    return items


def compute_metrics(
    y_true: Sequence[str],
    scores: np.ndarray,
    labels: Sequence[str],
    positive: str | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
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
    y_pred = [labels[i] for i in scores.argmax(axis=1)]
    notes: list[str] = []
    present = sorted(set(y_true), key=labels.index)
    binary = len(labels) == 2
    sweep: list[SweepPoint] = []
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
        for t in thresholds:
            guess = p >= t
            negatives = int((~truth).sum())
            sweep.append(
                SweepPoint(
                    threshold=float(t),
                    accuracy=float(metrics.accuracy_score(truth, guess)),
                    precision=float(metrics.precision_score(truth, guess, zero_division=0)),
                    recall=float(metrics.recall_score(truth, guess, zero_division=0)),
                    f1=float(metrics.f1_score(truth, guess, zero_division=0)),
                    false_positive_rate=float((guess & ~truth).sum() / negatives) if negatives else 0.0,
                )
            )
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
        notes=notes,
    )


def plot_report(report: EvalReport, y_true: Sequence[str], scores: np.ndarray, path: Path) -> Path:
    """Draw the ROC curve(s) and the per-label score histograms into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    labels = report.labels
    scores = np.asarray(scores, dtype=np.float64)
    fig, (ax_roc, ax_hist) = plt.subplots(1, 2, figsize=(11, 4.5))
    bins = np.linspace(0.0, 1.0, 21)
    if report.positive_label is not None:
        pos = labels.index(report.positive_label)
        truth = np.array([y == report.positive_label for y in y_true])
        if report.roc_auc is not None:
            fpr, tpr, _ = roc_curve(truth, scores[:, pos])
            ax_roc.plot(fpr, tpr, label=f"{report.positive_label} (AUC {report.roc_auc:.3f})")
        for name in labels:
            mask = np.array([y == name for y in y_true])
            if mask.any():
                ax_hist.hist(scores[mask, pos], bins=bins, alpha=0.6, label=f"true {name} (n={int(mask.sum())})")
        ax_hist.set_xlabel(f"P({report.positive_label})")
    else:
        for k, name in enumerate(labels):
            truth = np.array([y == name for y in y_true])
            if truth.any() and not truth.all():
                fpr, tpr, _ = roc_curve(truth, scores[:, k])
                ax_roc.plot(fpr, tpr, label=f"{name} vs rest")
            if truth.any():
                ax_hist.hist(scores[truth, k], bins=bins, alpha=0.6, label=f"{name} (n={int(truth.sum())})")
        ax_hist.set_xlabel("score of the true label")
    ax_roc.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax_roc.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_hist.set(ylabel="images", title="score histograms per true label")
    for ax in (ax_roc, ax_hist):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
    title = f"{report.model_name or 'model'}: accuracy {report.accuracy:.3f}, F1 {report.f1:.3f}, n={report.n_images}"
    if report.random_weights:
        title += " (RANDOM WEIGHTS)"
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate_folder(
    client: Client, root: Path, *, concurrency: int = 8, progress: ProgressCallback | None = None
) -> tuple[EvalReport, list[str], np.ndarray]:
    """Classify every image under ``root/<label>/`` and compute the report. Returns (report, y_true, scores)."""
    spec: ModelSpec = client.model_spec()
    labels = list(spec.labels.names)
    items = collect_labelled(root, labels)
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
    report = compute_metrics(y_true, scores, labels, spec.labels.positive)
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

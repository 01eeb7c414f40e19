"""`dfserve classify` and `dfserve eval`: thin wrappers over `Client.classify_many` and `dfserve.quality.eval`."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dfserve.client._constants import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, ProgressCallback
from dfserve.client._types import Prediction, Result
from dfserve.commandline import (
    checked,
    default_out_dir,
    deprecated_alias,
    positive_float,
    positive_int,
)
from dfserve.errors import UsageError
from dfserve.export.policy import DEFAULT_MODEL_ID
from dfserve.spec.endpoints import URL_HELP, default_url
from dfserve.spec.names import ADMIN_KEY_ENV
from dfserve.terminal import console, progress

PIPE_WIDTH = 100_000
"""Columns the table may take when stdout is not a terminal: a table is only as wide as its cells, so rows stay
whole (one line per image, paths unsplit) for grep, cut and a reader's editor."""
PROGRESS_MIN_ITEMS = 20
"""Runs with fewer images finish before a progress bar would tell anyone anything."""


def register(subparsers: Any) -> None:
    classify = subparsers.add_parser(
        "classify",
        help="classify image files and folders with a running server",
        description="Classify images (files, or folders searched recursively) with a running dfserve server. "
        "Exits with status 1 if any image failed.",
    )
    classify.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    _connection_args(classify)
    fmt = classify.add_mutually_exclusive_group()
    fmt.add_argument(
        "--json",
        action="store_true",
        help="JSON lines: path, label, score (the label's), positive_score (a detector's P(positive), else null), "
        "scores, error",
    )
    fmt.add_argument(
        "--csv",
        action="store_true",
        help="CSV: path, label, score, positive_score, one column per label, error",
    )
    classify.set_defaults(func=run_classify)

    evaluate = subparsers.add_parser(
        "eval",
        help="measure accuracy, ROC-AUC, ... on a folder with one sub-folder per label",
        description="Classify DIR/<label>/* with a running server and print scikit-learn's accuracy, precision, "
        "recall, F1, ROC-AUC, average precision, the confusion matrix and a threshold sweep; write them as "
        "JSON and a PNG (ROC curve, score histograms per label).",
    )
    evaluate.add_argument("directory", metavar="DIR", type=Path, help="folder with one sub-folder per label")
    evaluate.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where eval.json and eval.png go (default: a new ./eval-<date>-<time>)",
    )
    evaluate.add_argument(
        "--positive",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=[],
        metavar="LABEL[,FOLDER...]",
        help="the positive class (a model label), then other folder names that mean it, e.g. fake,FAKE,generated "
        "(default: the spec's positive class; folder names match labels in any case)",
    )
    operating = evaluate.add_mutually_exclusive_group()
    operating.add_argument(
        "--threshold",
        type=checked(_probability, "probability"),
        default=0.5,
        help="P(positive) at or above which it is positive",
    )
    operating.add_argument(
        "--target-fpr",
        type=checked(_probability, "probability"),
        default=None,
        metavar="FPR",
        help="choose the lowest threshold whose false positive rate is at most FPR, e.g. 0.01 "
        "(default: none, --threshold decides)",
    )
    _connection_args(evaluate)
    evaluate.set_defaults(func=run_eval)


def _probability(text: str) -> float:
    value = float(text)  # ValueError: the usage error says so
    if not 0 <= value <= 1:
        raise ValueError(f"{text} is not a probability between 0 and 1")
    return value


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help=URL_HELP)
    parser.add_argument(
        "--protocol", choices=("http", "grpc"), default=None, help="http or grpc (default: from the URL, else http)"
    )
    parser.add_argument(
        "--mode",
        choices=("file", "pixels"),
        default="file",
        help="file: send the encoded file (fewest bytes); pixels: preprocess here and send pixels",
    )
    parser.add_argument(
        "--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY, metavar="N", help="requests in flight"
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=DEFAULT_TIMEOUT, help="seconds per image, retries included"
    )
    parser.add_argument(
        "--model-name",
        default=None,
        metavar="NAME",
        help="the served Triton model to call (default: the ensemble the served spec names)",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=None,
        help="TLS: CA bundle (PEM) to trust for https:// and grpcs:// (default: the system's)",
    )
    parser.add_argument(
        "--cert-file",
        type=Path,
        default=None,
        help="TLS: client certificate (PEM), with --key-file (default: none, no client certificate)",
    )
    parser.add_argument(
        "--key-file", type=Path, default=None, help="TLS: the --cert-file's private key (PEM) (default: none)"
    )
    parser.add_argument(
        "--shared-memory",
        action="store_true",
        help="with --mode pixels: pixels through system shared memory (same host as the server, which must run "
        f"with --allow-shared-memory; the admin key from ${ADMIN_KEY_ENV})",
    )
    deprecated_alias(parser, "--model", new="--model-name")


def _check_combination(args: argparse.Namespace) -> None:
    """Options each valid alone that do not go together: a usage error before any file is read."""
    if args.shared_memory and args.mode != "pixels":
        raise UsageError(
            "--shared-memory carries preprocessed pixels only: add --mode pixels (files go over the network)"
        )


def _client(args: argparse.Namespace) -> Any:
    from dfserve.client._client import Client

    url = args.url or default_url(args.protocol)
    return Client(
        url,
        args.protocol,
        timeout=args.timeout,
        mode=args.mode,
        model=args.model_name,
        shared_memory=args.shared_memory,
        admin_key=os.environ.get(ADMIN_KEY_ENV),
        pool_size=args.concurrency,  # one connection per request in flight
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
    )


_NOTHING_THERE = ("refused", "failed to connect", "name or service not known", "unreachable", "no route")
"""What the socket layer and gRPC say when no server is there at all (as opposed to one that answered 503)."""


def _spec(client: Any) -> Any:
    """The served spec: the first call, so a server that is not there fails here, at once, as one line that says
    what to do. Nothing listening is not retried (a person at a terminal reruns the command); a server that
    answered 503 or 429 gets the SDK's retries."""
    from dfserve.client._exceptions import ServerUnavailableError

    try:
        return client.model_spec(max_retries=0)
    except ServerUnavailableError as exc:
        text = str(exc).lower()
        if not any(p in text for p in _NOTHING_THERE):  # it answered (503, 429, ...): retry as the SDK does
            return client.model_spec()
        reason = "connection refused" if "refused" in text else "cannot connect"
        raise ServerUnavailableError(
            f"no dfserve server at {client.url} ({reason}): start one with `dfserve serve --repository DIR`, "
            "or point --url at one",
            url=client.url,
            model=client.model,
        ) from exc


@contextmanager
def _progress(total: int, description: str) -> Iterator[ProgressCallback | None]:
    """Progress on stderr for long runs (a bar on a terminal, plain lines otherwise); None for short ones."""
    if total < PROGRESS_MIN_ITEMS:
        yield None
        return
    with progress(description, total, unit="images") as bar:
        yield bar.update


def run_classify(args: argparse.Namespace) -> int:
    from dfserve.client.files import find_images

    _check_combination(args)
    paths = find_images(args.paths)
    err = console(stderr=True)
    if not paths:
        err.print("no images found", highlight=False)
        return 1
    with _client(args) as client:
        spec = _spec(client)  # an unreachable server fails here, once, as one line
        with _progress(len(paths), "classifying") as progress:
            results = client.classify_many(paths, concurrency=args.concurrency, progress=progress)
    labels = list(spec.labels.names)
    if args.json:  # into a closed pipe (`| head`): dfserve.cli.main ends quietly
        _print_json(paths, results)
    elif args.csv:
        _print_csv(paths, results, labels)
    else:
        _print_table(paths, results, spec.labels.positive)
    failed = sum(1 for r in results if not isinstance(r, Prediction))
    if spec.random_weights:
        err.print("[yellow]warning:[/] the served model has random weights: its scores mean nothing", highlight=False)
    if failed:
        err.print(f"{failed} of {len(results)} images failed", highlight=False)
        return 1
    return 0


def result_record(path: str, result: Result) -> dict[str, Any]:
    """The JSON-lines object for one image: path, label, score (the winning label's probability), positive_score
    (a detector's P(positive), whichever label won; null for other models), scores, error."""
    if isinstance(result, Prediction):
        return {
            "path": path,
            "label": result.label,
            "score": result.score,
            "positive_score": result.positive_score,
            "scores": result.scores,
            "error": None,
        }
    return {"path": path, "label": None, "score": None, "positive_score": None, "scores": None, "error": str(result)}


def _print_json(paths: Sequence[str], results: Sequence[Result]) -> None:
    for path, result in zip(paths, results, strict=True):
        sys.stdout.write(json.dumps(result_record(path, result)) + "\n")
    sys.stdout.flush()


def _print_csv(paths: Sequence[str], results: Sequence[Result], labels: Sequence[str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["path", "label", "score", "positive_score", *(f"score_{name}" for name in labels), "error"])
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, Prediction):
            scores = [f"{result.scores[name]:.6f}" for name in labels]
            positive = "" if result.positive_score is None else f"{result.positive_score:.6f}"
            writer.writerow([path, result.label, f"{result.score:.6f}", positive, *scores, ""])
        else:
            writer.writerow([path, "", "", "", *([""] * len(labels)), str(result)])
    sys.stdout.flush()


def _print_table(paths: Sequence[str], results: Sequence[Result], positive: str | None = None) -> None:
    """One number per row with one meaning: a detector's P(positive) (header ``P(fake)``), whichever label won,
    with that label beside it; for other models the winning label's probability (header ``score``)."""
    table = Table(show_edge=False, header_style="bold")
    table.add_column("path", overflow="fold")
    table.add_column(f"P({positive})" if positive else "score", justify="right")
    table.add_column("label")
    table.add_column("error", overflow="fold", style="red")
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, Prediction):
            number = result.positive_score if positive and result.positive_score is not None else result.score
            table.add_row(Text(path), f"{number:.4f}", Text(result.label), "")
        else:
            table.add_row(Text(path), "", "", Text(str(result)))  # Text: paths and errors are never markup
    # into a pipe or a file, rich would assume 80 columns and fold long paths: give it all the width it needs
    width = None if sys.stdout.isatty() else PIPE_WIDTH
    Console(soft_wrap=False, width=width).print(table, highlight=False)


def run_eval(args: argparse.Namespace) -> int:
    from dfserve.quality.eval import collect_labelled, evaluate_folder, write_report

    _check_combination(args)
    out = console()
    with _client(args) as client:
        spec = _spec(client)
        labels = list(spec.labels.names)
        positive = args.positive[0] if args.positive else spec.labels.positive
        aliases = dict.fromkeys(args.positive[1:], positive) if positive else {}
        total = len(collect_labelled(args.directory, labels, aliases))
        with _progress(total, "evaluating") as progress:
            report, y_true, scores = evaluate_folder(
                client,
                args.directory,
                concurrency=args.concurrency,
                progress=progress,
                positive=args.positive,
                threshold=args.threshold,
                target_fpr=args.target_fpr,
            )
    json_path, png_path = write_report(report, y_true, scores, args.out or default_out_dir(prefix="eval"))

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    summary = Table(title=f"{report.n_images} images ({report.average} averages)", show_edge=False)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision"):
        summary.add_row(name, fmt(getattr(report, name)))
    out.print(summary)

    matrix = Table(title="confusion matrix (rows: true, columns: predicted)", show_edge=False)
    matrix.add_column("")
    for name in report.labels:
        matrix.add_column(name, justify="right")
    for name, row in zip(report.labels, report.confusion_matrix, strict=True):
        matrix.add_row(name, *(str(v) for v in row))
    out.print(matrix)

    if report.threshold_sweep:
        sweep = Table(title=f"threshold sweep on P({report.positive_label})", show_edge=False)
        for col in ("threshold", "accuracy", "precision", "recall", "f1", "FPR"):
            sweep.add_column(col, justify="right")
        for p in report.threshold_sweep:
            sweep.add_row(
                *(f"{v:.2f}" for v in (p.threshold, p.accuracy, p.precision, p.recall, p.f1)),
                f"{p.false_positive_rate:.2f}",
            )
        out.print(sweep)
    op = report.operating_point
    if op is not None:
        out.print(
            f"operating point ({report.threshold_rule}): threshold {op.threshold:.4g}, precision "
            f"{op.precision:.4f}, recall {op.recall:.4f}, F1 {op.f1:.4f}, FPR {op.false_positive_rate:.4f}",
            highlight=False,
            markup=False,
        )
    for note in report.notes:
        out.print(f"note: {note}", highlight=False)
    for failure in report.failed:
        out.print(Text.assemble(("failed: ", "red"), f"{failure['path']}: {failure['error']}"), highlight=False)
    out.print(f"wrote {json_path} and {png_path}", highlight=False)
    return 1 if report.failed else 0


def register_verify(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="prove a live server answers like the reference Transformers pipeline (needs the build extra)",
        description=(
            "Run the reference Transformers pipeline of CHECKPOINT here on the parity set (and --images), send the "
            "same files to the server, and compare. Exits 0 only when max |Δscore| is within the bar of the "
            "precision the server declares and no decision flips; 1 otherwise. Run it after every rollout."
        ),
    )
    p.add_argument("--url", default=None, help=URL_HELP)
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL_ID,
        help="the checkpoint the server should be serving, a folder or hub id; with --random-weights, its "
        "architecture (as for dfserve build)",
    )
    p.add_argument("--revision", default=None, help="hub revision of --model (default: the hub's main)")
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder of your own images to compare in addition to the parity set (default: the parity set only)",
    )
    p.add_argument(
        "--protocol", choices=("http", "grpc"), default=None, help="http or grpc (default: from the URL, else http)"
    )
    p.add_argument("--mode", choices=("file", "pixels"), default="file", help="what the SDK sends the server")
    p.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per request, retries included")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="the full report as JSON: alone, on stdout instead of the table; with FILE, written there as well "
        "(default: the table only)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="the server runs a `dfserve build --random-weights` build: compare with the same seeded weights",
    )
    p.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from dfserve.quality.verify import print_verification, verify, write_json

    result = verify(
        args.url or default_url(args.protocol),
        args.model,
        images=args.images,
        protocol=args.protocol,
        mode=args.mode,
        revision=args.revision,
        timeout=args.timeout,
        random_weights=args.random_weights,
    )
    if args.json == "-":
        print(write_json(result, None))
    else:
        print_verification(result, console())
        if args.json is not None:
            write_json(result, Path(args.json))
    return 0 if result.passed else 1

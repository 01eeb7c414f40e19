"""`dfserve verify`: prove that a live deployment still answers with the reference model's verdict.

The build proves its numbers once, on the build host. Once the repository runs elsewhere (NVIDIA's container on a
GPU host, Kubernetes, behind a load balancer), nothing but this checks that what answers is the model. Verify
runs the reference Transformers pipeline here on the parity set (the shipped photographs and the generated
hostile images of every build) plus the user's own folder, sends the same files to the server through the SDK,
and compares with `dfserve.export.fidelity`: it passes only when max |Δscore| is within the bar of the precision
the server says it serves (`ModelSpec.precision` → `FIDELITY_BARS`) and no decision flips.

Files of the user's folder that cannot be decoded are listed as bad files, not counted as disagreement.
It needs the `build` extra (torch and Transformers for the reference).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from rich.console import Console
from rich.table import Table

from dfserve.client import Client, DfserveClientError
from dfserve.client.files import find_images
from dfserve.errors import InvalidImageError, VerifyError
from dfserve.export.checkpoint import load_model, resolve
from dfserve.export.fidelity import ScoreDrift, compare, decisions, served_bar
from dfserve.export.parity import reference_scores, write_parity_images
from dfserve.export.policy import FidelityBar
from dfserve.preprocessing import preprocess_bytes, read_image_bytes
from dfserve.spec.model import ModelSpec
from dfserve.terminal import progress


@dataclass
class Verification:
    """What verify found: per-image rows, the drift, the bar it was held to, and the files it could not use."""

    url: str
    precision: str
    rows: list[dict[str, Any]]
    drift: ScoreDrift
    bar: dict[str, float]
    """The bar of `bar_name` (`dfserve.export.fidelity.served_bar`: the precision's, or the decode bar for a
    deployment that decodes on the GPU)."""
    bar_name: str = ""
    bad_files: list[dict[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.drift.flips == 0 and not self.problems

    @property
    def problems(self) -> list[str]:
        bar = FidelityBar(**self.bar)
        return self.drift.problems(bar)

    def as_report(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "precision": self.precision,
            "bar_name": self.bar_name or self.precision,
            "passed": self.passed,
            "problems": self.problems,
            "bar": self.bar,
            "drift": self.drift.as_report(),
            "images": self.rows,
            "bad_files": self.bad_files,
        }


def user_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise VerifyError(f"--images {folder}: not a folder")

    return [Path(p) for p in find_images([folder])]


def _usable(paths: list[Path], spec: ModelSpec) -> tuple[list[Path], list[dict[str, str]]]:
    """Split files into those the served model accepts (decodable within its limits) and bad ones, with why."""

    good, bad = [], []
    for path in paths:
        try:
            data = read_image_bytes(path, spec.limits) or b""
            preprocess_bytes(data, spec.preprocessing, spec.limits, "exact")
        except InvalidImageError as exc:
            bad.append({"image": str(path), "error": str(exc)})
            continue
        except OSError as exc:  # unreadable: permissions, a symlink loop
            bad.append({"image": str(path), "error": f"cannot read: {exc.strerror or exc}"})
            continue
        good.append(path)
    return good, bad


def verify(
    url: str,
    model: str,
    *,
    images: Path | None = None,
    protocol: str | None = None,
    mode: str = "file",
    revision: str | None = None,
    timeout: float = 60.0,
    random_weights: bool = False,
) -> Verification:
    """Compare the server at `url` with the reference pipeline of checkpoint `model`; raises a DfserveError
    (server unreachable, labels that do not match) when there is nothing to compare.

    `random_weights` compares with the seeded random-weights model that `dfserve build --random-weights` builds
    (same seed, same weights): a smoke-test deployment can be verified too."""

    # One try first: a stopped server (or a URL that is no dfserve server) is one error at once, not a string of
    # logged retries; the comparison itself then runs with the SDK's retries.
    with Client(url, cast(Any, protocol), mode=cast(Any, mode), timeout=timeout, max_retries=0) as probe:
        probe.model_spec()
    with Client(url, cast(Any, protocol), mode=cast(Any, mode), timeout=timeout) as client:  # checked by Client
        spec = client.model_spec()
        served_url = client.url
        ckpt = resolve(model, revision=revision, random_weights=random_weights)
        if ckpt.num_logits != spec.labels.num_logits:
            raise VerifyError(
                f"the server serves {spec.labels.num_logits} logit(s) {list(spec.labels.names)}, the checkpoint "
                f"{model} has {ckpt.num_logits}: not the same model"
            )
        with tempfile.TemporaryDirectory(prefix="dfserve-verify-") as tmp:
            paths = write_parity_images(Path(tmp) / "parity")
            bad: list[dict[str, str]] = []
            if images is not None:
                good, bad = _usable(user_images(images), spec)
                paths += good
            with progress("verify: the server", len(paths), unit="images") as sent:
                served = client.classify_many(paths, concurrency=4, progress=sent.update)
            kept = []
            for path, result in zip(paths, served, strict=True):
                if isinstance(result, DfserveClientError):
                    bad.append({"image": str(path), "error": f"server: {result}"})
                else:
                    kept.append((path, [result.scores[name] for name in spec.labels.names]))
            if not kept:
                raise VerifyError("no image could be compared: every file was refused")
            with progress("verify: the reference pipeline", len(kept), unit="images") as done:
                reference = reference_scores(ckpt, load_model(ckpt), spec, [p for p, _ in kept], done.advance)
    candidate = np.asarray([scores for _, scores in kept], dtype=np.float64)
    names = [p.name for p, _ in kept]
    drift = compare(reference, candidate, spec.labels, names)
    ref_dec, cand_dec = decisions(reference, spec.labels), decisions(candidate, spec.labels)
    positive = 1 if spec.labels.activation == "sigmoid" else None
    rows = []
    for i, name in enumerate(names):
        col = positive if positive is not None else int(ref_dec[i])
        rows.append(
            {
                "image": name,
                "label": spec.labels.names[col],
                "reference": float(reference[i, col]),
                "served": float(candidate[i, col]),
                "abs_diff": float(np.abs(reference[i] - candidate[i]).max()),
                "flipped": bool(ref_dec[i] != cand_dec[i]),
            }
        )
    bar_name, bar = served_bar(spec)
    return Verification(
        url=served_url,
        precision=spec.precision,
        rows=rows,
        drift=drift,
        bar={"max_abs_diff": bar.max_abs_diff, "min_agreement": bar.min_agreement},
        bar_name=bar_name,
        bad_files=bad,
    )


def print_verification(v: Verification, console: Console) -> None:
    table = Table(title=f"{v.url}: served against the reference pipeline", title_justify="left")
    for column in ("image", "label", "reference", "served", "|Δ|", "flipped"):
        table.add_column(column, justify="left" if column in ("image", "label") else "right")
    for r in v.rows:
        over = r["abs_diff"] > v.bar["max_abs_diff"]
        table.add_row(
            r["image"],
            r["label"],
            f"{r['reference']:.6f}",
            f"{r['served']:.6f}",
            f"[red]{r['abs_diff']:.2e}[/]" if over else f"{r['abs_diff']:.2e}",
            "[red]yes[/]" if r["flipped"] else "no",
        )
    console.print(table, markup=True, highlight=False)
    for bad in v.bad_files:
        console.print(f"bad file (not compared): {bad['image']}: {bad['error']}", markup=False, highlight=False)
    d = v.drift
    summary = (
        f"{d.images} images, precision {v.precision}: max |Δscore| {d.max_abs_diff:.2e} "
        f"(bar {v.bar_name or v.precision}: {v.bar['max_abs_diff']:g}), {d.flips} decision(s) flipped"
    )
    if v.passed:
        console.print(f"[bold green]verified[/]: {summary}", highlight=False)
    else:
        console.print(f"[bold red]NOT verified[/]: {summary}; " + "; ".join(v.problems or ["decisions flipped"]))


def write_json(v: Verification, path: Path | None) -> str:
    text = json.dumps(v.as_report(), indent=2)
    if path is not None:
        path.write_text(text + "\n")
    return text

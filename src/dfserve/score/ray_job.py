"""`dfserve score --ray`: the same job as a Ray Data pipeline, writing the same Parquet through the same store.

    keys (driver, streamed, claimed) ─► from_items ─► map_batches(read + sha256 + preprocess)   CPU tasks
                                                   ─► map_batches(Infer)   actors, SDK in pixels mode
                                                   ─► iter_batches on the driver ─► ResultStore (parts)

Reading, hashing, decoding and resizing run as Ray tasks on the cluster's CPU workers with
`dfserve.score.work.prepare` (dfserve's exact preprocessing, as the server's `preprocess` model runs it); the
`Infer` actors each hold one SDK `Client` and send a batch's pixels concurrently to the Triton fleet, whose
dynamic batcher forms the engine's batches. Throughput grows with CPU workers until the fleet is the bottleneck.

The driver streams the source and hands it to Ray in chunks of `chunk_size` keys, so the list of inputs is never
whole in memory; rows come back to the driver, which commits them with the single-machine run's `ResultStore`:
the exactly-once guarantee (parts committed atomically, the done set read on restart) is the same code.

Not done here: running the engine in-process on GPU workers (the issue's alternative); this pipeline always
infers through the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from dfserve.client import Client, DfserveClientError
from dfserve.client._constants import DEFAULT_TIMEOUT
from dfserve.score.run import RunStats, is_row_error, pending_keys
from dfserve.score.sources import Source, SourceError
from dfserve.score.store import Identity, ResultStore, Row, Summary
from dfserve.score.work import classify_prepared, prepare
from dfserve.spec.model import ModelSpec

INFER_CPUS = 0.25
"""An `Infer` actor mostly waits on the network: it reserves a quarter of a CPU, leaving the rest to decoding."""
DEFAULT_CHUNK = 20_000
"""Keys handed to Ray per dataset: large enough to keep the pipeline busy, small enough to stay in memory."""


def prepare_batch(batch: dict[str, np.ndarray], spec_json: str) -> dict[str, np.ndarray]:
    """Ray task: read, hash and preprocess a batch of inputs. A bad input keeps zero pixels and its error."""
    spec = ModelSpec.from_json(spec_json)
    height, width = spec.input_hw
    keys, locations = batch["path"].tolist(), batch["location"].tolist()
    pixels = np.zeros((len(keys), 3, height, width), dtype=np.uint8)
    shas: list[str] = []
    errors: list[str] = []  # "" for none: Ray turns a column of None into NaN
    for i, (key, location) in enumerate(zip(keys, locations, strict=True)):
        prepared = prepare(key, location, spec)
        shas.append(prepared.sha256 or "")
        errors.append(prepared.error or "")
        if prepared.payload is not None:
            pixels[i] = prepared.payload
    return {
        "path": np.asarray(keys, dtype=object),
        "sha256": np.asarray(shas, dtype=str),
        "error": np.asarray(errors, dtype=str),
        "pixels": pixels,
    }


class Infer:
    """Ray actor: one SDK client (pixels mode) per actor; a batch's images are sent concurrently."""

    def __init__(self, url: str, model: str | None, spec_json: str, concurrency: int, timeout: float | None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        self.client = Client(url, model=model, mode="pixels", pool_size=concurrency, **kwargs)
        self.spec = ModelSpec.from_json(spec_json)
        self.labels = list(self.spec.labels.names)
        self.pool = ThreadPoolExecutor(concurrency)

    def one(self, key: str, pixels: np.ndarray) -> tuple[str, list[float] | None, str, str]:

        try:
            p = classify_prepared(self.client, self.spec, pixels, key)
        except DfserveClientError as exc:
            if is_row_error(exc):
                return "", None, str(exc), ""
            raise
        return p.label, [p.scores[name] for name in self.labels], "", p.model_version

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["path"])
        errors = [str(e) for e in batch["error"]]
        paths, pixels = batch["path"], batch["pixels"]
        jobs = {i: self.pool.submit(self.one, str(paths[i]), pixels[i]) for i in range(n) if not errors[i]}
        labels = [""] * n
        scores = np.full((n, len(self.labels)), np.nan)
        versions = [""] * n
        for i, job in jobs.items():
            label, values, error, version = job.result()
            labels[i], errors[i], versions[i] = label, error, version
            if values is not None:
                scores[i] = values
        return {
            "path": batch["path"],
            "sha256": batch["sha256"],
            "label": np.asarray(labels, dtype=str),
            "scores": scores,
            "error": np.asarray(errors, dtype=str),
            "model_version": np.asarray(versions, dtype=str),
        }


def chunks(keys: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(islice(keys, size)):
        yield chunk


def score_on_ray(
    source_location: str,
    out: Path,
    url: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    concurrency: int = 8,
    batch_size: int = 32,
    actors: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
    rows_per_part: int | None = None,
    flush_seconds: float | None = None,
    model: str | None = None,
    timeout: float | None = None,
) -> tuple[RunStats, Summary]:
    """Score `source_location` into `out` with Ray Data; `address` None starts a local Ray."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise SourceError("`dfserve score --ray` needs Ray; run: pip install 'dfserve[score-ray]'") from exc

    source = Source.open(source_location)
    with Client(url, model=model, mode="pixels", timeout=DEFAULT_TIMEOUT if timeout is None else timeout) as client:
        spec = client.model_spec()
        entry = client.model
    spec_json = spec.to_json()
    store = ResultStore(out, Identity.of(spec, entry))
    if rows_per_part is not None:
        store.rows_per_part = rows_per_part
    if flush_seconds is not None:
        store.flush_seconds = flush_seconds
    stats = RunStats()
    started = time.monotonic()
    init: dict[str, Any] = {"address": address} if address else {"num_cpus": num_cpus}
    ray.init(**init, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        with store:
            for chunk in chunks(pending_keys(source, store, stats), chunk_size):
                items = [{"path": key, "location": source.resolve(key)} for key in chunk]
                ds: Any = ray.data.from_items(items)
                # CPU tasks, then I/O-bound actors: their different resources keep Ray from fusing the two into
                # the actors, which would do all the decoding on `actors` workers instead of every CPU.
                ds = ds.map_batches(
                    prepare_batch, fn_kwargs={"spec_json": spec_json}, batch_size=batch_size, num_cpus=1
                )
                ds = ds.map_batches(
                    Infer,
                    fn_constructor_args=(url, model, spec_json, concurrency, timeout),
                    batch_size=batch_size,
                    compute=ray.data.ActorPoolStrategy(size=actors),
                    num_cpus=INFER_CPUS,
                )
                try:
                    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                        for row in _rows(batch, spec):
                            store.add(row)
                            if row.error is None:
                                stats.scored += 1
                            else:
                                stats.failed += 1
                except BaseException:
                    store.flush()
                    raise
            summary = store.finish()
    finally:
        ray.shutdown()
        stats.seconds = time.monotonic() - started
    return stats, summary


def _rows(batch: dict[str, np.ndarray], spec: ModelSpec) -> Iterator[Row]:
    names = spec.labels.names
    for i, key in enumerate(batch["path"]):
        error, sha = str(batch["error"][i]), str(batch["sha256"][i]) or None
        if error:
            yield Row(path=str(key), sha256=sha, error=error)
            continue
        scores = dict(zip(names, (float(v) for v in batch["scores"][i]), strict=True))
        yield Row(str(key), sha, str(batch["label"][i]), scores, None, str(batch["model_version"][i]))

"""`dfserve score` on one machine: stream the source, preprocess on the client in parallel, send pixels through
the SDK with a bounded number of requests in flight, and commit rows to the `ResultStore` as they finish.

Parallelism: `concurrency` threads each take one input at a time through read, hash, decode, resize (Pillow
releases the GIL while it decodes and resizes) and the request (the network wait releases it too), like
`Client.classify_many` in pixels mode. With ``workers > 0`` the CPU half runs instead in that many processes,
for large images whose decoding would otherwise be bound by one core's share of the GIL; the threads then only
wait for the pixels and send them. At most ``3 x concurrency`` inputs are in hand at any time, so memory stays
flat whatever the size of the source.

``mode="file"`` sends the encoded files instead and lets the server decode (its `preprocess` model, the same
function): faster where the server has cores to spare, e.g. client and server on one machine.

A bad file becomes a row with an `error`. A failure that is not the file's (the server gone past the SDK's
retries, a refused model) stops the run after committing every row already finished: run again to continue.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dfserve.client import Client, DfserveClientError, InvalidInputError, RequestTooLargeError
from dfserve.client._constants import Mode
from dfserve.score.sources import Source
from dfserve.score.store import Identity, ResultStore, Row, Summary
from dfserve.score.work import Prepared, classify_prepared, prepare
from dfserve.spec.model import ModelSpec

if TYPE_CHECKING:
    from dfserve.client import Client


def is_row_error(exc: BaseException) -> bool:
    """Whether an SDK error is the input's fault (then it is that input's row); any other error stops the run."""

    return isinstance(exc, InvalidInputError | RequestTooLargeError)


@dataclass
class RunStats:
    """What this run did (the store's `Summary` says what OUT holds)."""

    scored: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return (self.scored + self.failed) / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """A rich progress bar with images/s and ETA; the total arrives from a background count of the source."""

    def __init__(self, enabled: bool) -> None:
        self._bar = None
        self._task = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("scoring"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]} images/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("score", total=None, rate="-")
        self._start = time.monotonic()
        self._done = 0

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def set_total(self, total: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=total)

    def advance(self) -> None:
        self._done += 1
        if self._bar is not None and self._task is not None:
            elapsed = time.monotonic() - self._start
            self._bar.update(self._task, advance=1, rate=f"{self._done / elapsed:.1f}" if elapsed > 0 else "-")


def count_pending(source: Source, store: ResultStore, progress: Progress, stop: threading.Event) -> None:
    """Count the source's inputs not done before this run, in the background, for the bar's total and ETA."""
    total = 0
    for key in source.inputs():
        if stop.is_set():
            return
        total += key not in store.done_before
    progress.set_total(total)


def pending_keys(source: Source, store: ResultStore, stats: RunStats) -> Iterator[str]:
    """The source's keys that still need scoring, claimed by this run as they are handed out."""
    for key in source.inputs():
        if store.claim(key):
            yield key
        else:
            stats.skipped += 1


def row_for(prepared: Prepared, send: Callable[[Prepared], Row]) -> Row:
    """The row of a prepared input: its error, or what sending its pixels returned."""
    if prepared.payload is None:
        return Row(path=prepared.key, sha256=prepared.sha256, error=prepared.error)
    return send(prepared)


def sender(client: Client, spec: ModelSpec) -> Callable[[Prepared], Row]:
    """Send one prepared input's pixels; an input-caused refusal is a row error, anything else propagates."""

    def send(prepared: Prepared) -> Row:
        assert prepared.payload is not None
        try:
            p = classify_prepared(client, spec, prepared.payload, prepared.key)
        except DfserveClientError as exc:
            if is_row_error(exc):
                return Row(path=prepared.key, sha256=prepared.sha256, error=str(exc))
            raise
        return Row(prepared.key, prepared.sha256, p.label, dict(p.scores), None, p.model_version)

    return send


def score(
    source_location: str,
    out: Path,
    url: str,
    *,
    concurrency: int = 8,
    workers: int = 0,
    mode: Mode = "pixels",
    rows_per_part: int | None = None,
    flush_seconds: float | None = None,
    progress: bool = True,
    protocol: str | None = None,
    model: str | None = None,
    timeout: float | None = None,
) -> tuple[RunStats, Summary]:
    """Score every input of `source_location` not already in `out`, then merge `out`. Returns this run's
    statistics and what `out` holds."""

    source = Source.open(source_location)
    kwargs: dict[str, object] = {"mode": mode, "pool_size": concurrency}
    if timeout is not None:
        kwargs["timeout"] = timeout
    with Client(url, protocol, model=model, **kwargs) as client:  # type: ignore[arg-type]
        spec = client.model_spec()
        store = ResultStore(out, Identity.of(spec, client.model))
        if rows_per_part is not None:
            store.rows_per_part = rows_per_part
        if flush_seconds is not None:
            store.flush_seconds = flush_seconds
        with store:
            stats = run_pipeline(source, store, client, spec, concurrency, workers, progress, mode)
            return stats, store.finish()


def run_pipeline(
    source: Source,
    store: ResultStore,
    client: Client,
    spec: ModelSpec,
    concurrency: int,
    workers: int,
    show_progress: bool,
    mode: Mode = "pixels",
) -> RunStats:
    """Run `concurrency` threads over the pending keys, committing their rows from this thread as they finish.

    The threads pull keys from one shared iterator and hand rows back through a queue of `2 x concurrency`
    places (the `Client.classify_iter` pattern: no future per input), so at most `3 x concurrency` inputs are in
    hand. On any exception the rows already handed back are committed before it propagates."""
    stats = RunStats()
    send = sender(client, spec)
    processes: ProcessPoolExecutor | None = ProcessPoolExecutor(workers) if workers > 0 else None
    keys = pending_keys(source, store, stats)
    keys_lock = threading.Lock()
    rows: queue.Queue[Row | _End] = queue.Queue(maxsize=2 * concurrency)
    stop = threading.Event()

    def put(item: Row | _End) -> None:
        while not stop.is_set():
            try:
                rows.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def worker() -> None:
        error: BaseException | None = None
        try:
            while not stop.is_set():
                with keys_lock:
                    key = next(keys, None)
                if key is None:
                    return
                location = source.resolve(key)
                if processes is not None:
                    prepared = processes.submit(prepare, key, location, spec, mode).result()
                else:
                    prepared = prepare(key, location, spec, mode)
                put(row_for(prepared, send))
        except BaseException as exc:  # a run-stopping error: handed to the committing thread
            error = exc
        finally:
            put(_End(error))

    started = time.monotonic()
    threads = [threading.Thread(target=worker, name=f"dfserve-score-{i}", daemon=True) for i in range(concurrency)]
    try:
        with Progress(show_progress) as bar:
            if show_progress:
                threading.Thread(target=count_pending, args=(source, store, bar, stop), daemon=True).start()
            for thread in threads:
                thread.start()
            running, failure = len(threads), None
            while running:
                item = rows.get()
                if isinstance(item, _End):
                    running -= 1
                    if item.error is not None and failure is None:
                        failure = item.error
                        stop.set()  # the other threads end after their current input
                    continue
                store.add(item)
                if item.error is None:
                    stats.scored += 1
                else:
                    stats.failed += 1
                bar.advance()
            if failure is not None:
                raise failure
    except BaseException:
        store.flush()  # every row handed back is valid: the next run skips them
        raise
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        if processes is not None:
            processes.shutdown(cancel_futures=True)
        stats.seconds = time.monotonic() - started
    return stats


@dataclass(frozen=True)
class _End:
    """A worker thread finished; `error` is what stopped it, if anything did."""

    error: BaseException | None = None

"""Every request of a load test, kept: its end time, latency and outcome, so the figures come from request-level
latencies rather than from Locust's per-second rolling percentiles.

Locust reports percentiles two ways, neither of them right for a plot against users: its totals come from a
histogram rounded to two significant digits, and its history gives one rolling percentile per second, so the
"p99 at 8 users" of a run was a median of per-second p99s. Each Locust process (the master, or each worker with
`--processes`) therefore appends one CSV line per request to `samples-<pid>.csv` (`--dfserve-samples-dir`), and
the report computes percentiles on the raw samples with numpy. Which user count a request ran under comes from
Locust's own history (one row per second with the user count), so it is the whole run's count, not one
worker's. Requests that ended after the load began to fall (the stop at the end of a run) are left out of the
by-users figures, and a figure drawn from fewer than `MIN_SAMPLES_FOR_P99` requests carries a caution.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dfserve.measure.stats import percentile

SAMPLES_GLOB = "samples-*.csv"
MIN_SAMPLES_FOR_P99 = 100
"""Below this many requests a p99 is one or two requests' latency: the report says so beside the figure."""


class SampleWriter:
    """Appends one line per request (unix end time, latency ms, 1 for a failure) for this process."""

    def __init__(self, folder: str | Path) -> None:
        path = Path(folder) / f"samples-{os.getpid()}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", buffering=1 << 16)

    def __call__(self, response_time: float, exception: BaseException | None = None, **_: Any) -> None:
        self._file.write(f"{time.time():.4f},{response_time:.3f},{int(exception is not None)}\n")

    def close(self, *_: Any, **__: Any) -> None:
        self._file.close()


def record_samples(environment: Any, folder: str | Path) -> SampleWriter:
    """Register a writer on Locust's `request` event for this process; closed when Locust quits."""
    writer = SampleWriter(folder)
    environment.events.request.add_listener(writer)
    environment.events.quitting.add_listener(writer.close)
    return writer


@dataclass(frozen=True)
class Samples:
    """Every request of the run: end times (unix s), latencies (ms), failure flags."""

    ends: np.ndarray
    latencies_ms: np.ndarray
    failed: np.ndarray

    @property
    def ok_latencies_ms(self) -> np.ndarray:
        return self.latencies_ms[~self.failed]


def read_samples(folder: Path) -> Samples | None:
    """The samples every Locust process wrote under `folder`; None when none were written."""
    rows: list[tuple[float, float, int]] = []
    files = sorted(folder.glob(SAMPLES_GLOB))
    if not files:
        return None
    for path in files:
        with path.open(newline="") as fh:
            for line in csv.reader(fh):
                if len(line) == 3:
                    try:
                        rows.append((float(line[0]), float(line[1]), int(line[2])))
                    except ValueError:
                        continue  # a line cut short by a killed process
    data = np.array(rows, dtype=np.float64).reshape(-1, 3)
    order = np.argsort(data[:, 0], kind="stable")
    data = data[order]
    return Samples(data[:, 0], data[:, 1], data[:, 2].astype(bool))


def latency_figures(latencies_ms: np.ndarray) -> dict[str, Any]:
    """p50/p90/p99 (nearest rank on the raw samples) and, where they are too few for a p99, a caution."""
    ordered = np.sort(latencies_ms).tolist()
    out: dict[str, Any] = {
        "p50_ms": percentile(ordered, 0.50),
        "p90_ms": percentile(ordered, 0.90),
        "p99_ms": percentile(ordered, 0.99),
        "samples": len(ordered),
    }
    if 0 < len(ordered) < MIN_SAMPLES_FOR_P99:
        out["caution"] = f"p99 of {len(ordered)} requests (fewer than {MIN_SAMPLES_FOR_P99}): rough"
    return out


def users_at(samples: Samples, history: list[tuple[float, int]]) -> np.ndarray:
    """The run's user count when each request ended, from Locust's per-second history (timestamp, users)."""
    if not history:
        return np.zeros(samples.ends.shape, dtype=np.int64)
    stamps = np.array([t for t, _ in history], dtype=np.float64)
    users = np.array([u for _, u in history], dtype=np.int64)
    index = np.searchsorted(stamps, samples.ends, side="right") - 1
    return np.where(index >= 0, users[np.clip(index, 0, None)], 0)


def ramp_down_start(history: list[tuple[float, int]]) -> float | None:
    """When the user count first fell after reaching its peak (Locust stopping the users at the end), or None."""
    if not history:
        return None
    peak = max(u for _, u in history)
    reached = False
    for stamp, users in history:
        reached = reached or users == peak
        if reached and users < peak:
            return stamp
    return None

"""The step ramp as a small state machine, kept apart from Locust so that its logic is plain to test.

Each step: set the target user count, wait until every user is running, let the queues settle for the
warm-up, then measure throughput and latency percentiles over the rest of the step from the difference of two
snapshots of the cumulative statistics (Locust's `StatsEntry` keeps a histogram of rounded response times; in
distributed mode the master's copy is refreshed by the workers' reports every few seconds, so steps there
should last 10 s or more). The ramp stops at the ceiling, or `patience` steps after the knee (see `knee.py`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dfserve.measure.knee import StepFigures, find_knee, steps_past_knee
from dfserve.measure.stats import histogram_percentile


class CumulativeStats(Protocol):
    """What the ramp reads from Locust's `stats.total` (a `StatsEntry`)."""

    @property
    def num_requests(self) -> int: ...
    @property
    def num_failures(self) -> int: ...
    @property
    def response_times(self) -> Mapping[int, int]: ...


@dataclass(frozen=True)
class Snapshot:
    requests: int
    failures: int
    histogram: dict[int, int]

    @classmethod
    def of(cls, stats: CumulativeStats) -> Snapshot:
        return cls(int(stats.num_requests), int(stats.num_failures), dict(stats.response_times))


def figures_between(first: Snapshot, last: Snapshot, users: int, duration_s: float) -> StepFigures:
    hist = {k: v - first.histogram.get(k, 0) for k, v in last.histogram.items()}
    hist = {k: v for k, v in hist.items() if v > 0}
    requests = last.requests - first.requests
    return StepFigures(
        users=users,
        duration_s=round(duration_s, 3),
        requests=requests,
        failures=last.failures - first.failures,
        rps=requests / duration_s if duration_s > 0 else 0.0,
        p50_ms=histogram_percentile(hist, 0.50),
        p90_ms=histogram_percentile(hist, 0.90),
        p99_ms=histogram_percentile(hist, 0.99),
    )


@dataclass
class StepRamp:
    step_users: int
    max_users: int
    step_time: float
    warmup: float
    min_gain: float = 0.25
    patience: int = 2
    on_step: Callable[[list[StepFigures]], None] | None = None
    steps: list[StepFigures] = field(default_factory=list)
    target: int = 0
    done: bool = False
    _phase: str = "idle"
    _since: float = 0.0
    _first: Snapshot | None = None

    def __post_init__(self) -> None:
        if self.step_users < 1 or self.max_users < 1:
            raise ValueError("step_users and max_users must be at least 1")
        if not 0 <= self.warmup < self.step_time:
            raise ValueError("the warm-up must be shorter than the step")

    def tick(self, now: float, user_count: int, stats: CumulativeStats) -> int | None:
        """The user count to run now, or None when the ramp is over. Call about once a second."""
        if self.done:
            return None
        if self._phase == "idle":
            self.target = min(self.step_users, self.max_users)
            self._phase = "spawning"
        if self._phase == "spawning" and user_count >= self.target:
            self._phase, self._since = "warmup", now
        if self._phase == "warmup" and now - self._since >= self.warmup:
            self._phase, self._since, self._first = "measure", now, Snapshot.of(stats)
        if self._phase == "measure" and now - self._since >= self.step_time - self.warmup:
            assert self._first is not None
            self.steps.append(figures_between(self._first, Snapshot.of(stats), self.target, now - self._since))
            if self.on_step is not None:
                self.on_step(list(self.steps))
            if self.target >= self.max_users or steps_past_knee(self.steps, self.min_gain) >= self.patience:
                self.done = True
                return None
            self.target = min(self.target + self.step_users, self.max_users)
            self._phase = "spawning"
        return self.target


def write_steps(
    path: str | Path, steps: list[StepFigures], min_gain: float, extra: dict[str, Any] | None = None
) -> None:
    """The ramp's figures and knee as JSON, replaced atomically (a reader never sees half a file)."""
    knee = find_knee(steps, min_gain)
    doc = {
        "steps": [s.as_dict() for s in steps],
        "knee": knee.as_dict() if knee else None,
        "min_gain": min_gain,
        **(extra or {}),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".steps-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
    os.replace(tmp, target)


def read_steps(path: str | Path) -> list[StepFigures]:
    doc = json.loads(Path(path).read_text())
    return [StepFigures(**s) for s in doc.get("steps", [])]

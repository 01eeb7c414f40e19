"""Finding the knee of a step ramp: the load past which more users only add latency.

In a closed-loop test (each user sends its next request when the previous one returns) Little's law ties the
three figures together: throughput = users / latency. Below saturation, latency stays flat and throughput
grows in proportion to the users; past it, throughput stays put and latency grows in proportion instead. The
knee is the last step whose move up from the step before still bought throughput: a step "grows" when its
throughput rose by at least `min_gain` times the relative rise in users (with min_gain = 0.25, going from 4 to 6
users, +50 %, must add at least 12.5 % throughput).

Pure arithmetic, no Locust import: the load shape, the runner and the tests share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StepFigures:
    """What one step of the ramp measured, over its window after warm-up."""

    users: int
    duration_s: float
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Knee:
    step: int
    """Index of the knee step in the ramp."""
    users: int
    rps: float
    p50_ms: float
    p99_ms: float
    saturated: bool
    """True when a later step failed to grow (the knee is real); False when the ramp ended still growing, so
    the knee is at least this many users."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def grows(before: StepFigures, after: StepFigures, min_gain: float = 0.25) -> bool:
    """Whether going from `before` to `after` still bought throughput."""
    if after.users <= before.users:
        return after.rps > before.rps
    if before.rps <= 0:
        return after.rps > 0
    user_rise = after.users / before.users - 1.0
    return after.rps / before.rps - 1.0 >= min_gain * user_rise


def find_knee(steps: Sequence[StepFigures], min_gain: float = 0.25) -> Knee | None:
    """The knee of a ramp: the first step that no later step out-grows (see the module docstring).

    Comparing each step with every later one, not only its neighbour, keeps one noisy step from being taken
    for the knee when throughput grows again after it. None for an empty ramp or one with no throughput.
    """
    usable = [s for s in steps if s.requests > 0]
    if not usable:
        return None
    for i, step in enumerate(usable):
        if not any(grows(step, later, min_gain) for later in usable[i + 1 :]):
            return Knee(
                step=list(steps).index(step),
                users=step.users,
                rps=step.rps,
                p50_ms=step.p50_ms,
                p99_ms=step.p99_ms,
                saturated=i < len(usable) - 1,
            )
    raise AssertionError("unreachable: the last step is never out-grown")


def steps_past_knee(steps: Sequence[StepFigures], min_gain: float = 0.25) -> int:
    """How many steps were run after the knee without out-growing it (the ramp stops at `patience`)."""
    knee = find_knee(steps, min_gain)
    if knee is None or not knee.saturated:
        return 0
    return len(steps) - 1 - knee.step

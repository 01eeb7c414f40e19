"""How a soak's figures moved over time: memory growth and latency drift after the warm-up.

A server that leaks shows it as memory that keeps rising under a steady load; one that degrades shows it as a
p99 that creeps up. Two views of each are given because each alone misleads: the change from the first
post-warm-up window to the last one is what a person reads off the plot, but one noisy window at either end
moves it; the least-squares slope over every post-warm-up window is robust to a single window and says how
fast the figure moves (per hour), but hides a step change. A rate per hour is only given when the measured span
is long enough to extrapolate (`MIN_EXTRAPOLATION_S`): 50 seconds of noise is not "-35 MiB/h". The verdict
(`dfserve soak --max-growth`) is on the first, as the issue states its bar; both are reported.

Pure arithmetic on plain numbers (no numpy): the soak runner, its report and the unit tests share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dfserve.measure.stats import parse_duration

MIN_EXTRAPOLATION_S = 600.0
"""The shortest post-warm-up span from which a rate per hour is stated; shorter, only the change over the span."""


def parse_warmup(text: str, duration_s: float) -> float:
    """The warm-up in seconds: a share of the run (``10%``) or a duration (``60s``, ``1m``, ``0``)."""
    value = text.strip()
    if value.endswith("%"):
        try:
            share = float(value[:-1])
        except ValueError:
            raise ValueError(f"warm-up {text!r} is not a percentage like 10%") from None
        if not 0 <= share < 100:
            raise ValueError(f"warm-up share must be in [0, 100), got {text!r}")
        return duration_s * share / 100
    if value in ("0", "0s"):
        return 0.0
    return parse_duration(value)


def percent_change(first: float, last: float) -> float | None:
    """(last - first) / first in percent; None when `first` is not positive (nothing to compare with)."""
    if first <= 0 or not math.isfinite(first) or not math.isfinite(last):
        return None
    return (last - first) / first * 100.0


def fitted_slope(times_s: Sequence[float], values: Sequence[float]) -> float | None:
    """The least-squares slope of `values` over `times_s` (units per second); None with fewer than two
    distinct times."""
    if len(times_s) != len(values):
        raise ValueError(f"{len(times_s)} times but {len(values)} values")
    n = len(times_s)
    if n < 2:
        return None
    mean_t = sum(times_s) / n
    mean_v = sum(values) / n
    var_t = sum((t - mean_t) ** 2 for t in times_s)
    if var_t <= 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in zip(times_s, values, strict=True)) / var_t


@dataclass(frozen=True)
class Drift:
    """How one figure moved between the first and the last post-warm-up window."""

    first: float
    last: float
    change_pct: float | None
    """(last - first) / first, percent."""
    slope_per_hour: float | None
    """Least-squares slope over every post-warm-up window, in the figure's unit per hour; None when the span is
    shorter than `MIN_EXTRAPOLATION_S` (too short to extrapolate to an hour)."""
    fitted_change_pct: float | None
    """The fitted line's rise over the post-warm-up span, as a percent of the fitted first value."""
    windows: int
    span_s: float = 0.0
    """Seconds from the first post-warm-up window to the last: what the figures were measured over."""

    def rate(self, unit: float = 1.0, name: str = "") -> str:
        """`+12.0 MiB per hour` when the span allows it, else `+3.1 MiB over 50 s (too short to say per hour)`."""
        if self.slope_per_hour is not None:
            return f"{self.slope_per_hour / unit:+.1f}{name} per hour"
        return (
            f"{(self.last - self.first) / unit:+.1f}{name} over {self.span_s:.0f} s "
            f"(under {MIN_EXTRAPOLATION_S / 60:.0f} min: too short to say per hour)"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def drift(times_s: Sequence[float], values: Sequence[float]) -> Drift | None:
    """The `Drift` of `values` sampled at `times_s` (already limited to the post-warm-up windows, in order);
    None when there is no window."""
    if len(times_s) != len(values):
        raise ValueError(f"{len(times_s)} times but {len(values)} values")
    if not values:
        return None
    slope = fitted_slope(times_s, values)
    span = times_s[-1] - times_s[0]
    fitted_pct = None
    if slope is not None:
        mean_t, mean_v = sum(times_s) / len(times_s), sum(values) / len(values)
        start = mean_v + slope * (times_s[0] - mean_t)
        end = mean_v + slope * (times_s[-1] - mean_t)
        fitted_pct = percent_change(start, end)
    return Drift(
        first=values[0],
        last=values[-1],
        change_pct=percent_change(values[0], values[-1]),
        slope_per_hour=slope * 3600 if slope is not None and span >= MIN_EXTRAPOLATION_S else None,
        fitted_change_pct=fitted_pct,
        windows=len(values),
        span_s=span,
    )

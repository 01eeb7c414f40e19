"""The statistics every measurement shares, written once: percentiles of raw request latencies and of Locust's
response-time histograms, and the duration syntax of every command that runs for a while (`--duration`,
`--run-time`, `--window`, ...).

Percentiles are nearest-rank on the raw samples (no interpolation between two requests' latencies): the figure
reported is a latency some request really had.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None for none."""
    if not sorted_values:
        return None
    rank = min(max(1, math.ceil(fraction * len(sorted_values) - 1e-9)), len(sorted_values))
    return float(sorted_values[rank - 1])


def histogram_percentile(histogram: Mapping[int, int], fraction: float) -> float:
    """The response time (ms) below which `fraction` of the requests in a histogram fall."""
    total = sum(histogram.values())
    if total <= 0:
        return 0.0
    needed = fraction * total
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= needed:
            return float(value)
    return float(max(histogram))


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> float:
    """``600``, ``90s``, ``10m``, ``1h30m`` in seconds (a positive number)."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        match = _DURATION.match(value)
        if not value or not match or not any(match.groups()):
            raise ValueError(f"duration {text!r} is not like 600, 90s, 10m or 1h30m") from None
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return seconds

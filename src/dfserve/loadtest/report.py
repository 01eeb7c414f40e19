"""Reading Locust's CSV output into `summary.json`, and drawing throughput and latency against users.

Locust writes `<prefix>_stats.csv` (one row per request name plus "Aggregated"), `<prefix>_stats_history.csv`
(one row per second with the user count and rolling percentiles), `<prefix>_failures.csv` and
`<prefix>_exceptions.csv`. Numbers come from those files, not from Locust's console output.
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfserve.errors import LocustRunError
from dfserve.loadtest.samples import MIN_SAMPLES_FOR_P99, Samples, latency_figures, ramp_down_start, users_at
from dfserve.measure.knee import StepFigures

AGGREGATED = "Aggregated"


def _num(value: str | None) -> float | None:
    if value is None or value.strip() in ("", "N/A"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@dataclass(frozen=True)
class UserPoint:
    """Throughput and latency while a given number of users ran."""

    users: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    seconds: int
    requests: int = 0
    caution: str | None = None
    """Set where the point's percentiles rest on too few requests to mean much."""


def _stats_row(row: dict[str, str]) -> dict[str, Any]:
    return {
        "type": row.get("Type", ""),
        "name": row.get("Name", ""),
        "requests": int(_num(row.get("Request Count")) or 0),
        "failures": int(_num(row.get("Failure Count")) or 0),
        "rps": _num(row.get("Requests/s")) or 0.0,
        "avg_ms": _num(row.get("Average Response Time")),
        "min_ms": _num(row.get("Min Response Time")),
        "max_ms": _num(row.get("Max Response Time")),
        "p50_ms": _num(row.get("50%")),
        "p90_ms": _num(row.get("90%")),
        "p95_ms": _num(row.get("95%")),
        "p99_ms": _num(row.get("99%")),
        "avg_bytes": _num(row.get("Average Content Size")),
    }


def parse_stats(prefix: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the Aggregated row, the per-name rows) of `<prefix>_stats.csv`."""
    rows = _read_rows(Path(f"{prefix}_stats.csv"))
    if not rows:
        raise LocustRunError(f"Locust wrote no statistics ({prefix}_stats.csv is missing or empty)")
    parsed = [_stats_row(r) for r in rows]
    total = next((r for r in parsed if r["name"] == AGGREGATED), None)
    if total is None:
        raise LocustRunError(f"{prefix}_stats.csv has no {AGGREGATED} row")
    return total, [r for r in parsed if r["name"] != AGGREGATED]


def parse_failures(prefix: Path) -> list[dict[str, Any]]:
    return [
        {
            "method": r.get("Method", ""),
            "name": r.get("Name", ""),
            "error": r.get("Error", ""),
            "occurrences": int(_num(r.get("Occurrences")) or 0),
        }
        for r in _read_rows(Path(f"{prefix}_failures.csv"))
    ]


def parse_exceptions(prefix: Path) -> list[dict[str, Any]]:
    return [
        {"count": int(_num(r.get("Count")) or 0), "message": r.get("Message", ""), "nodes": r.get("Nodes", "")}
        for r in _read_rows(Path(f"{prefix}_exceptions.csv"))
    ]


def points_by_users(prefix: Path) -> list[UserPoint]:
    """Group the per-second history by user count (seconds with no completed request are left out)."""
    groups: dict[int, list[tuple[float, float, float, float]]] = defaultdict(list)
    for row in _read_rows(Path(f"{prefix}_stats_history.csv")):
        if row.get("Name") != AGGREGATED:
            continue
        users = int(_num(row.get("User Count")) or 0)
        rps = _num(row.get("Requests/s"))
        p50, p90, p99 = (_num(row.get(c)) for c in ("50%", "90%", "99%"))
        if users <= 0 or not rps or p50 is None:
            continue
        groups[users].append((rps, p50, p90 or p50, p99 or p50))
    return [
        UserPoint(
            users=u,
            rps=statistics.fmean(r[0] for r in rows),
            p50_ms=statistics.median(r[1] for r in rows),
            p90_ms=statistics.median(r[2] for r in rows),
            p99_ms=statistics.median(r[3] for r in rows),
            seconds=len(rows),
        )
        for u, rows in sorted(groups.items())
    ]


def history_users(prefix: Path) -> list[tuple[float, int]]:
    """(unix second, users) from Locust's per-second history, in time order."""
    out = []
    for row in _read_rows(Path(f"{prefix}_stats_history.csv")):
        if row.get("Name") != AGGREGATED:
            continue
        stamp, users = _num(row.get("Timestamp")), _num(row.get("User Count"))
        if stamp is not None and users is not None:
            out.append((stamp, int(users)))
    return sorted(out)


def points_from_samples(samples: Samples, history: list[tuple[float, int]]) -> list[UserPoint]:
    """Throughput and request-level percentiles per user count, from every request that ended while that many
    users ran, the stop at the end of the run left out. A level's throughput is its answered requests over the
    seconds the run spent at it."""
    users = users_at(samples, history)
    keep = users > 0
    cut = ramp_down_start(history)
    if cut is not None:
        keep &= samples.ends < cut
        history = [(s, u) for s, u in history if s < cut]
    seconds = Counter(u for _, u in history)
    points = []
    for level in sorted({int(u) for u in users[keep]}):
        mask = keep & (users == level) & ~samples.failed
        figures = latency_figures(samples.latencies_ms[mask])
        if not figures["samples"]:
            continue
        span = max(seconds.get(level, 0), 1)
        points.append(
            UserPoint(
                level,
                figures["samples"] / span,
                figures["p50_ms"],
                figures["p90_ms"],
                figures["p99_ms"],
                span,
                figures["samples"],
                figures.get("caution"),
            )
        )
    return points


def points_from_steps(steps: list[StepFigures]) -> list[UserPoint]:
    return [
        UserPoint(
            s.users,
            s.rps,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            round(s.duration_s),
            s.requests,
            f"p99 of {s.requests} requests (fewer than {MIN_SAMPLES_FOR_P99}): rough"
            if s.requests < MIN_SAMPLES_FOR_P99
            else None,
        )
        for s in steps
        if s.requests
    ]


def plot_users(points: list[UserPoint], path: Path, title: str, knee_users: int | None = None) -> Path:
    """Throughput (left axis) and latency percentiles (right axis) against users, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    users = [p.users for p in points]
    ax.plot(users, [p.rps for p in points], "o-", color="tab:blue", label="throughput (req/s)")
    ax.set_xlabel("concurrent users")
    ax.set_ylabel("requests / s", color="tab:blue")
    ax.set_ylim(0, max((p.rps for p in points), default=1.0) * 1.3 or 1.0)
    ax.set_xlim(0, max(users, default=1) * 1.1 + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lat = ax.twinx()
    for attr, style, label in (("p50_ms", "s--", "p50"), ("p90_ms", "^--", "p90"), ("p99_ms", "v:", "p99")):
        lat.plot(users, [getattr(p, attr) for p in points], style, color="tab:red", alpha=0.8, label=f"{label} (ms)")
    rough = [p for p in points if p.caution]
    if rough:  # a p99 of a few dozen requests: drawn hollow and said in the legend
        lat.plot(
            [p.users for p in rough],
            [p.p99_ms for p in rough],
            "o",
            markersize=11,
            markerfacecolor="none",
            markeredgecolor="black",
            label=f"p99 of < {MIN_SAMPLES_FOR_P99} requests",
        )
    lat.set_ylabel("latency (ms)", color="tab:red")
    lat.set_ylim(0, max((p.p99_ms for p in points), default=1.0) * 1.3 or 1.0)
    if knee_users is not None:
        ax.axvline(knee_users, color="grey", linestyle="-.", label=f"knee: {knee_users} users")
    handles = ax.get_legend_handles_labels()[0] + lat.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + lat.get_legend_handles_labels()[1]
    ax.legend(handles, labels, loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    if not points:
        ax.text(0.5, 0.5, "no completed requests", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

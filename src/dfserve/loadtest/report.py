"""Reading Locust's CSV output into `summary.json`, and drawing throughput and latency against users.

Locust writes `<prefix>_stats.csv` (one row per request name plus "Aggregated"), `<prefix>_stats_history.csv`
(one row per second with the user count and rolling percentiles), `<prefix>_failures.csv` and
`<prefix>_exceptions.csv`. Numbers come from those files, not from Locust's console output.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfserve.errors import LocustRunError
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


def points_from_steps(steps: list[StepFigures]) -> list[UserPoint]:
    return [UserPoint(s.users, s.rps, s.p50_ms, s.p90_ms, s.p99_ms, round(s.duration_s)) for s in steps if s.requests]


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

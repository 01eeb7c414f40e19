"""What the server says about itself while the bench runs: Triton's per-model statistics and the memory of the
`tritonserver` process with its Python-backend stubs.

Triton's statistics are cumulative counters (count and total nanoseconds for queue, compute input, compute
infer and compute output, per model and per batch size); the bench takes the difference of two snapshots so
each section reports only its own requests. Memory is the resident set size of the server process plus all
its descendants (each Python model instance runs in its own stub process); pages shared between them are
counted once per process, so the sum is an upper bound of what they hold together.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def inference_statistics(http_url: str, models: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Triton's cumulative statistics for each model (HTTP JSON form, version folded in)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url, connection_timeout=30, network_timeout=30)
    try:
        out = {}
        for model in models:
            stats = client.get_inference_statistics(model_name=model)
            entries = stats.get("model_stats", [])
            out[model] = entries[0] if entries else {}
        return out
    finally:
        client.close()


def _count_ns(entry: dict[str, Any] | None) -> tuple[int, int]:
    entry = entry or {}
    return int(entry.get("count", 0)), int(entry.get("ns", 0))


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per-request averages (ms) of each phase, and the batches Triton formed, between two snapshots."""
    b_inf, a_inf = before.get("inference_stats", {}), after.get("inference_stats", {})
    requests = _count_ns(a_inf.get("success"))[0] - _count_ns(b_inf.get("success"))[0]
    result: dict[str, Any] = {
        "requests": requests,
        "failed": _count_ns(a_inf.get("fail"))[0] - _count_ns(b_inf.get("fail"))[0],
        "inferences": int(after.get("inference_count", 0)) - int(before.get("inference_count", 0)),
        "executions": int(after.get("execution_count", 0)) - int(before.get("execution_count", 0)),
    }
    for phase in PHASES:
        count = _count_ns(a_inf.get(phase))[0] - _count_ns(b_inf.get(phase))[0]
        ns = _count_ns(a_inf.get(phase))[1] - _count_ns(b_inf.get(phase))[1]
        result[f"{phase}_ms"] = round(ns / count / 1e6, 3) if count > 0 else None
    result["avg_batch"] = round(result["inferences"] / result["executions"], 2) if result["executions"] > 0 else None
    before_batches = {int(b["batch_size"]): _count_ns(b.get("compute_infer"))[0] for b in before.get("batch_stats", [])}
    batches = {}
    for b in after.get("batch_stats", []):
        size = int(b["batch_size"])
        n = _count_ns(b.get("compute_infer"))[0] - before_batches.get(size, 0)
        if n > 0:
            batches[size] = n
    result["executions_by_batch"] = dict(sorted(batches.items()))
    return result

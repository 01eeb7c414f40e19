"""Prometheus and Grafana provisioning: they parse, point at the compose services, and the dashboard's PromQL
reads only metrics Triton exports. The CPU-side names are checked against the real embedded server's /metrics."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.compose import REPO, load_compose

MONITORING = REPO / "deploy"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "dfserve.json"

# Metric families of Triton 2.51's /metrics that the dashboard may use. nv_gpu_* exist only where Triton sees
# GPUs (DCGM); the rest also on the CPU-only embedded server.
TRITON_CPU_METRICS = frozenset(
    {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        "nv_inference_pending_request_count",
    }
)
TRITON_GPU_METRICS = frozenset(
    {
        "nv_gpu_utilization",
        "nv_gpu_memory_total_bytes",
        "nv_gpu_memory_used_bytes",
        "nv_gpu_power_usage",
        "nv_gpu_power_limit",
        "nv_energy_consumption",
    }
)

PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
)


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, label names or
    Grafana variables."""
    stripped = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # range selectors ([$__rate_interval])
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", stripped)  # grouping labels
    names = set()
    for match in re.finditer(r"(?<![\w$])([a-zA-Z_:][\w:]*)(\s*\()?", stripped):
        name, call = match.group(1), match.group(2)
        if call or name in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def exprs_by_title() -> dict[str, list[str]]:
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard()["panels"]}


def test_promql_metric_extraction() -> None:
    assert promql_metrics(
        'sum by (model) (rate(nv_inference_queue_duration_us{model="x"}[$__rate_interval])) '
        "/ sum by (model) (rate(nv_inference_request_success[5m]))"
    ) == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    assert promql_metrics("avg without (gpu_uuid) (nv_gpu_utilization) > bool 0.5") == {"nv_gpu_utilization"}
    assert promql_metrics("rate(some_other_metric[1m])") == {"some_other_metric"}


def test_prometheus_scrapes_tritons_metrics_port() -> None:
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    triton = load_compose()["services"]["triton"]
    metrics_port = next(a.split("=")[1] for a in triton["command"] if a.startswith("--metrics-port="))
    assert targets == [f"triton:{metrics_port}"]


def test_grafana_datasource_is_the_prometheus_service_and_the_dashboard_uses_it() -> None:
    compose = load_compose()
    provisioning = MONITORING / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090") for p in compose["services"]["prometheus"]["ports"])
    for panel in dashboard()["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"]), panel["title"]

    (provider,) = yaml.safe_load((provisioning / "dashboards" / "dfserve.yml").read_text())["providers"]
    mounts = dict(v.removesuffix(":ro").split(":", 1) for v in compose["services"]["grafana"]["volumes"] if v[0] == ".")
    assert (REPO / "deploy/grafana/dashboards").resolve() == DASHBOARD.parent.resolve()
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_dashboard_panels_use_only_triton_metrics() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and board["uid"]
    for title, exprs in exprs_by_title().items():
        assert exprs, f"panel {title!r} has no query"
        for expr in exprs:
            names = promql_metrics(expr)
            assert names, expr
            assert names <= TRITON_CPU_METRICS | TRITON_GPU_METRICS, f"{title}: unknown metrics {names}"


def test_dashboard_has_throughput_queue_time_batch_size_and_gpu_utilisation() -> None:
    exprs = {title: " ".join(e) for title, e in exprs_by_title().items()}

    def panel(word: str) -> str:
        (match,) = [expr for title, expr in exprs.items() if word.lower() in title.lower()]
        return match

    assert promql_metrics(panel("throughput")) == {"nv_inference_request_success"}
    assert "rate(nv_inference_request_success" in panel("throughput")
    queue = panel("queue time")
    assert re.search(r"rate\(nv_inference_queue_duration_us.*\)\s*/\s*.*rate\(nv_inference_request_success", queue)
    batch = panel("batch size")
    assert re.search(r"rate\(nv_inference_count.*\)\s*/\s*.*rate\(nv_inference_exec_count", batch)
    assert promql_metrics(panel("GPU utilisation")) == {"nv_gpu_utilization"}


@pytest.mark.slow
def test_dashboard_metrics_exist_on_the_real_server(triton_server: Any, built_repo: Path) -> None:
    """The CPU-side metric families the dashboard reads, in the real server's /metrics. The embedded server
    has no GPU, so nv_gpu_* cannot appear there: they are checked by name only (TRITON_GPU_METRICS)."""
    import tritonclient.http as httpclient

    from dfserve.config import ModelSpec

    spec = ModelSpec.load(built_repo)
    client = httpclient.InferenceServerClient(triton_server.http_url)
    try:  # one request so that every per-model counter has samples
        h, w = spec.input_hw
        pixels = httpclient.InferInput(spec.tensors.pixels, [1, 3, h, w], "UINT8")
        import numpy as np

        pixels.set_data_from_numpy(np.zeros((1, 3, h, w), dtype=np.uint8))
        client.infer(spec.models.engine, [pixels])
    finally:
        client.close()
    with urllib.request.urlopen(f"http://{triton_server.metrics_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    exported = set(re.findall(r"^# TYPE (\w+) ", text, re.MULTILINE))
    used = set().union(*(promql_metrics(e) for exprs in exprs_by_title().values() for e in exprs))
    cpu_side = used - TRITON_GPU_METRICS
    assert cpu_side and cpu_side <= exported, f"not exported by Triton: {cpu_side - exported}"
    assert exported >= TRITON_CPU_METRICS, f"list of Triton metrics is stale: {TRITON_CPU_METRICS - exported}"
    assert re.search(rf'^nv_inference_exec_count\{{.*model="{spec.models.engine}".*\}} [1-9]', text, re.MULTILINE)
    gpu_used = used & TRITON_GPU_METRICS
    assert gpu_used == {"nv_gpu_utilization", "nv_gpu_memory_used_bytes"}
    assert not gpu_used & exported  # a CPU-only server: these appear only on a GPU host

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

TRITON_SUMMARY_METRICS = frozenset({"nv_inference_request_summary_us", "nv_inference_queue_summary_us"})
"""Exported only with --metrics-config=summary_latencies=true (compose and Kubernetes pass it): quantiles."""
DCGM_METRICS = frozenset({"DCGM_FI_DEV_GPU_UTIL"})
"""From NVIDIA's DCGM exporter (compose service dcgm-exporter, the GPU Operator on Kubernetes)."""
KNOWN_METRICS = TRITON_CPU_METRICS | TRITON_GPU_METRICS | TRITON_SUMMARY_METRICS | DCGM_METRICS
GRAFANA_VARIABLES = {"$instance": ".*"}
"""The dashboard's variables and the value of their "All" (allValue), as Grafana substitutes them."""

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


def expand(expr: str) -> str:
    """A panel's query as Grafana sends it with every variable at "All"."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def exprs_by_title() -> dict[str, list[str]]:
    return {p["title"]: [expand(t["expr"]) for t in p["targets"]] for p in dashboard()["panels"]}


def test_promql_metric_extraction() -> None:
    assert promql_metrics(
        'sum by (model) (rate(nv_inference_queue_duration_us{model="x"}[$__rate_interval])) '
        "/ sum by (model) (rate(nv_inference_request_success[5m]))"
    ) == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    assert promql_metrics("avg without (gpu_uuid) (nv_gpu_utilization) > bool 0.5") == {"nv_gpu_utilization"}
    assert promql_metrics("rate(some_other_metric[1m])") == {"some_other_metric"}


def test_prometheus_scrapes_tritons_metrics_port() -> None:
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"triton", "dcgm"}
    targets = {name: [t for sc in job["static_configs"] for t in sc["targets"]] for name, job in jobs.items()}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())
    services = load_compose()["services"]
    metrics_port = next(a.split("=")[1] for a in services["triton"]["command"] if a.startswith("--metrics-port="))
    assert targets["triton"] == [f"triton:{metrics_port}"]
    assert targets["dcgm"] == ["dcgm-exporter:9400"] and services["dcgm-exporter"]["profiles"] == ["monitoring"]
    # the alerting rules: the file Prometheus is told to load is the one compose mounts
    mounts = dict(v.removesuffix(":ro").split(":", 1) for v in services["prometheus"]["volumes"] if v[0] == ".")
    assert config["rule_files"] == [mounts["./deploy/prometheus/rules.yml"]]


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
            assert names <= KNOWN_METRICS, f"{title}: unknown metrics {names}"


def test_dashboard_has_throughput_queue_time_batch_size_and_gpu_utilisation() -> None:
    exprs = {title: " ".join(e) for title, e in exprs_by_title().items()}

    def panel(word: str) -> str:
        found = {title: expr for title, expr in exprs.items() if word.lower() in title.lower()}
        (match,) = [e for t, e in found.items() if t.lower().startswith(word.lower())] or found.values()
        return match

    assert promql_metrics(panel("throughput")) == {"nv_inference_request_success"}
    assert "rate(nv_inference_request_success" in panel("throughput")
    queue = panel("queue time")
    assert re.search(r"rate\(nv_inference_queue_duration_us.*\)\s*/\s*.*rate\(nv_inference_request_success", queue)
    batch = panel("batch size")
    assert re.search(r"rate\(nv_inference_count.*\)\s*/\s*.*rate\(nv_inference_exec_count", batch)
    assert promql_metrics(panel("GPU utilisation (DCGM)")) == {"DCGM_FI_DEV_GPU_UTIL"}
    assert promql_metrics(exprs["GPU utilisation"]) == {"nv_gpu_utilization"}
    # the tails (issue 29): p99s from Triton's summary latencies
    assert 'nv_inference_request_summary_us{instance=~".*",quantile="0.99"}' in panel("p99 request time")
    assert promql_metrics(panel("p99 queue time")) == {"nv_inference_queue_summary_us"}


def test_dashboard_has_a_server_variable_every_triton_query_uses() -> None:
    (variable,) = dashboard()["templating"]["list"]
    assert (
        variable["name"] == "instance"
        and variable["includeAll"]
        and variable["allValue"] == GRAFANA_VARIABLES["$instance"]
    )
    assert "label_values(nv_inference_request_success, instance)" in variable["definition"]
    for board_panel in dashboard()["panels"]:
        for target in board_panel["targets"]:
            from tests.deploy import promql

            for selector in promql.selectors(promql.parse(target["expr"].replace("$__rate_interval", "1m"))):
                if selector.metric.startswith("nv_"):
                    assert promql.Matcher("instance", "=~", "$instance") in selector.matchers, board_panel["title"]


@pytest.mark.slow
def test_dashboard_metrics_exist_on_the_real_server(triton_server: Any, built_repo: Path) -> None:
    """The CPU-side metric families the dashboard reads, in the real server's /metrics. The embedded server
    has no GPU, so nv_gpu_* cannot appear there: they are checked by name only (TRITON_GPU_METRICS)."""
    import tritonclient.http as httpclient

    from dfserve.spec.model import ModelSpec

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
    cpu_side = used - TRITON_GPU_METRICS - TRITON_SUMMARY_METRICS - DCGM_METRICS  # (summaries: test_alerts.py)
    assert cpu_side and cpu_side <= exported, f"not exported by Triton: {cpu_side - exported}"
    assert exported >= TRITON_CPU_METRICS, f"list of Triton metrics is stale: {TRITON_CPU_METRICS - exported}"
    assert re.search(rf'^nv_inference_exec_count\{{.*model="{spec.models.engine}".*\}} [1-9]', text, re.MULTILINE)
    gpu_used = used & TRITON_GPU_METRICS
    assert gpu_used == {"nv_gpu_utilization", "nv_gpu_memory_used_bytes"}
    assert not gpu_used & exported  # a CPU-only server: these appear only on a GPU host


# --- issue 12: every ratio divides like with like, checked on the committed expressions and the real server ---

# What each Triton counter adds up, from Triton's metrics documentation ("Cumulative time requests spend ...",
# "a batch of n is counted as n inferences", "Number of inference batch executions") and its stats code
# (the durations and nv_inference_count grow once per request, nv_inference_exec_count once per execution).
# COUNTS: the thing a counter counts (a denominator's unit). SUMMED_OVER: the things a counter is a sum over, so
# that dividing it by their count gives a mean per thing. nv_inference_count is a sum over requests (their batch
# sizes) and also over executions (each execution's batch size is the sum of its requests'); a duration is not a
# sum over executions, since every request of a batch is charged the execution's whole time.
COUNTS = {
    "nv_inference_request_success": "request",
    "nv_inference_request_failure": "request",
    "nv_inference_exec_count": "execution",
    "nv_inference_count": "inference",
}
SUMMED_OVER = {
    "nv_inference_request_success": {"request"},
    "nv_inference_request_failure": {"request"},
    "nv_inference_count": {"request", "execution"},
    "nv_inference_exec_count": {"execution"},
    "nv_inference_request_duration_us": {"request"},
    "nv_inference_queue_duration_us": {"request"},
    "nv_inference_compute_input_duration_us": {"request"},
    "nv_inference_compute_infer_duration_us": {"request"},
    "nv_inference_compute_output_duration_us": {"request"},
}
ADAPTER_RULES = REPO / "deploy" / "k8s" / "autoscaling" / "prometheus-adapter-rules.yaml"
POD_LABELS = {"namespace": "dfserve", "pod": "dfserve-triton-0"}
"""Target labels Prometheus' Kubernetes discovery adds to every scraped series; the adapter matches on them."""


def adapter_query() -> str:
    """The HPA rule's metricsQuery as prometheus-adapter sends it for one pod."""
    (rule,) = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]
    matchers = ",".join(f'{k}="{v}"' for k, v in POD_LABELS.items())
    return str(rule["metricsQuery"]).replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")


def committed_expressions() -> dict[str, str]:
    exprs = {title: e for title, (e, *_) in exprs_by_title().items()}
    exprs["HPA dfserve_pending_requests"] = adapter_query()
    return exprs


def like_with_like_problems(expr: str) -> list[str]:
    """Why a ratio in `expr` mixes kinds or filters; empty when every division is like with like."""
    from tests.deploy import promql

    problems = []
    for division in promql.divisions(promql.parse(expr)):
        top, bottom = promql.selectors(division.numerator), promql.selectors(division.denominator)
        if {s.matchers for s in top} != {s.matchers for s in bottom} or len({s.matchers for s in top}) != 1:
            problems.append(f"label filters differ: {[set(s.matchers) for s in top + bottom]}")
        if promql.groupings(division.numerator) != promql.groupings(division.denominator):
            problems.append("numerator and denominator are grouped differently")
        units = {COUNTS.get(s.metric) for s in bottom}
        if len(units) != 1 or None in units:
            problems.append(f"denominator is not one kind of count: {[s.metric for s in bottom]}")
            continue
        (unit,) = units
        for selector in top:
            if unit not in SUMMED_OVER.get(selector.metric, set()):
                problems.append(f"{selector.metric} is not a sum over {unit}s")
    return problems


def test_like_with_like_check_rejects_the_old_expressions() -> None:
    """The check can fail: the expressions issue 12 found wrong."""
    old_compute = (
        "sum by (model) (rate(nv_inference_compute_infer_duration_us[$__rate_interval])) "
        "/ sum by (model) (rate(nv_inference_exec_count[$__rate_interval]))"
    )
    assert like_with_like_problems(old_compute) == [
        "nv_inference_compute_infer_duration_us is not a sum over executions"
    ]
    unfiltered_denominator = (
        'sum(rate(nv_inference_queue_duration_us{pod="p",model="vit"}[1m])) by (pod)'
        ' / clamp_min(sum(rate(nv_inference_request_success{pod="p"}[1m])) by (pod), 0.001)'
    )
    assert like_with_like_problems(unfiltered_denominator)[0].startswith("label filters differ")
    assert like_with_like_problems(
        "sum by (model) (rate(nv_inference_count[1m])) / sum (rate(nv_inference_exec_count[1m]))"
    ) == ["numerator and denominator are grouped differently"]


def test_every_committed_ratio_divides_like_with_like() -> None:
    exprs = committed_expressions()
    assert sum(1 for e in exprs.values() if "/" in e) >= 4
    for title, expr in exprs.items():
        assert like_with_like_problems(expr) == [], title


def test_per_model_ratios_are_filtered_to_the_models_that_execute() -> None:
    """Names from the spec, not retyped: the engine and preprocess run batches, the ensemble only routes."""
    from dfserve.spec.model import ModelNames
    from tests.deploy import promql

    names = ModelNames()
    for title, expr in committed_expressions().items():
        if title.startswith(("Queue time", "Average batch size", "Compute time", "HPA")):
            for selector in promql.selectors(promql.parse(expr)):
                (model,) = [m for m in selector.matchers if m.label == "model"]
                selected = {n for n in (names.engine, names.preprocess, names.ensemble) if model.matches({"model": n})}
                assert selected == {names.engine, names.preprocess}, (title, model)


def _scrape(url: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    from tests.deploy import promql

    with urllib.request.urlopen(f"http://{url}/metrics", timeout=30) as response:
        return promql.parse_exposition(response.read().decode(), extra)


def _stats(client: Any, model: str) -> dict[str, Any]:
    (stats,) = client.get_inference_statistics(model)["model_stats"]
    return stats  # type: ignore[no-any-return]


def _per_request_us(before: dict[str, Any], after: dict[str, Any], field: str) -> float:
    ns = after["inference_stats"][field]["ns"] - before["inference_stats"][field]["ns"]
    count = after["inference_stats"][field]["count"] - before["inference_stats"][field]["count"]
    return float(ns / count / 1000)


@pytest.mark.slow
def test_committed_expressions_on_the_real_servers_metrics(
    triton_server: Any, built_repo: Path, sample_images: dict[str, Path]
) -> None:
    """Send a known mix (single images, batched requests, files through the ensemble), scrape /metrics before
    and after, evaluate every committed expression with the scraped counters and compare each ratio with the
    statistics API over the same interval."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import tritonclient.http as httpclient

    from dfserve.spec.model import ModelSpec
    from tests.deploy import promql

    spec = ModelSpec.load(built_repo)
    engine, pre, ensemble = spec.models.engine, spec.models.preprocess, spec.models.ensemble
    h, w = spec.input_hw
    sizes = [1] * 24 + [2] * 6 + [3] * 4  # 34 engine requests, 48 images; concurrent, so batches form
    files = [p.read_bytes() for p in sample_images.values()]

    client = httpclient.InferenceServerClient(triton_server.http_url)
    try:
        stats_before = {m: _stats(client, m) for m in (engine, pre)}
        start = time.monotonic()
        before = _scrape(triton_server.metrics_url, POD_LABELS)

        def send(model: str, tensor: Any) -> None:
            own = httpclient.InferenceServerClient(triton_server.http_url)  # one per thread: not thread-safe
            try:
                own.infer(model, [tensor])
            finally:
                own.close()

        def engine_request(n: int) -> None:
            pixels = httpclient.InferInput(spec.tensors.pixels, [n, 3, h, w], "UINT8")
            pixels.set_data_from_numpy(np.full((n, 3, h, w), 7, dtype=np.uint8))
            send(engine, pixels)

        def file_request(data: bytes) -> None:
            image = httpclient.InferInput(spec.tensors.image, [1, 1], "BYTES")
            image.set_data_from_numpy(np.array([[data]], dtype=object))
            send(ensemble, image)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(engine_request, sizes))
            list(pool.map(file_request, files * 2))
        expected_engine_requests = len(sizes) + 2 * len(files)
        expected_images = sum(sizes) + 2 * len(files)

        # Statistics are recorded as requests are released, which may trail the responses by a moment.
        deadline = time.monotonic() + 30
        while True:
            stats_after = {m: _stats(client, m) for m in (engine, pre)}
            done = stats_after[engine]["inference_stats"]["success"]["count"]
            done -= stats_before[engine]["inference_stats"]["success"]["count"]
            if done >= expected_engine_requests or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        after = _scrape(triton_server.metrics_url, POD_LABELS)
        scrapes = promql.Scrapes(before, after, time.monotonic() - start)
        stats_check = {m: _stats(client, m) for m in (engine, pre)}
    finally:
        client.close()
    assert stats_check == stats_after, "traffic from elsewhere during the measurement"

    eng_before, eng_after = stats_before[engine], stats_after[engine]
    requests = eng_after["inference_stats"]["success"]["count"] - eng_before["inference_stats"]["success"]["count"]
    images = eng_after["inference_count"] - eng_before["inference_count"]
    executions = eng_after["execution_count"] - eng_before["execution_count"]
    assert (requests, images) == (expected_engine_requests, expected_images)
    assert executions < requests  # the dynamic batcher formed batches

    # The counter table above, on the real server: nv_inference_count is a sum over executions' batch sizes;
    # the compute duration is not (each request of a batch is charged the batch's time).
    batches = {b["batch_size"]: b for b in eng_after["batch_stats"]}
    old = {b["batch_size"]: b for b in eng_before["batch_stats"]}

    def batch_delta(size: int, field: str, key: str) -> int:
        return int(batches[size][field][key] - old.get(size, {field: {key: 0}})[field][key])

    assert sum(size * batch_delta(size, "compute_infer", "count") for size in batches) == images
    per_execution_ns = sum(batch_delta(size, "compute_infer", "ns") for size in batches)
    per_request_ns = (
        eng_after["inference_stats"]["compute_infer"]["ns"] - eng_before["inference_stats"]["compute_infer"]["ns"]
    )
    assert per_request_ns > per_execution_ns

    def series(title: str, model: str) -> float:
        value = promql.evaluate(promql.parse(committed_expressions()[title]), scrapes)
        assert isinstance(value, dict)
        (match,) = [v for labels, v in value.items() if ("model", model) in labels]
        return match

    # Each expression, evaluated from the scraped counters, against the statistics API. Triton adds each
    # request's duration to the metric in whole microseconds, so a mean may be up to 1 µs lower.
    assert series("Average batch size", engine) == pytest.approx(images / executions, rel=1e-12)
    assert images / executions > 1
    for title, field in (
        ("Queue time per request", "queue"),
        ("Compute time per request", "compute_infer"),
        ("End-to-end request time", "success"),
    ):
        for model in (engine, pre):
            expected = _per_request_us(stats_before[model], stats_after[model], field)
            assert expected - 1 <= series(title, model) <= expected, (title, model)
    assert series("Compute time per request", engine) > 0
    assert series("Throughput (requests/s)", engine) == pytest.approx(requests / scrapes.seconds, rel=1e-12)

    # The autoscaling signal after the load: a gauge of requests still waiting, none once every answer came back
    # (the saturated case: test_autoscaling_signal_grows_when_the_ensemble_saturates).
    hpa = promql.evaluate(promql.parse(adapter_query()), scrapes)
    assert hpa == {frozenset({("pod", POD_LABELS["pod"])}): 0.0}


def test_promql_subset_refuses_what_it_cannot_evaluate() -> None:
    from tests.deploy import promql

    for outside in (
        "histogram_quantile(0.9, rate(x_bucket[1m]))",
        "rate(a[1m]) ^ 2",
        "rate(a[1m]) >= 2",
        "sum(rate(a[1m])) by (model) offset 5m",
        'a{model~"x"}',
    ):
        with pytest.raises(promql.PromQLError):
            promql.parse(outside)
    node = promql.parse('sum by (model) (rate(a{model=~"p|v"}[1m])) / clamp_min(sum by (model) (rate(b[1m])), 0.5)')
    before = {"a": {frozenset({("model", "v")}): 10.0}, "b": {frozenset({("model", "v")}): 0.0}}
    after = {"a": {frozenset({("model", "v")}): 40.0, frozenset({("model", "x")}): 5.0}}
    after["b"] = {frozenset({("model", "v")}): 3.0}
    assert promql.evaluate(node, promql.Scrapes(before, after, 10.0)) == {frozenset({("model", "v")}): 3.0 / 0.5}


HPA = REPO / "deploy" / "k8s" / "autoscaling" / "hpa.yaml"


@pytest.mark.slow
def test_autoscaling_signal_grows_when_the_ensemble_saturates(
    triton_server: Any, built_repo: Path, sample_images: dict[str, Path]
) -> None:
    """More clients than the server's preprocess instance and batch can take at once (decoding on the CPU is the
    bottleneck, as on a GPU host with server-side decoding): the HPA's query, evaluated on scrapes taken during the
    load, stays above the HPA's per-pod target; once the load stops it is back to 0."""
    import threading
    import time

    import numpy as np
    import tritonclient.http as httpclient

    from dfserve.spec.model import ModelSpec
    from tests.deploy import promql

    spec = ModelSpec.load(built_repo)
    target = float(yaml.safe_load(HPA.read_text())["spec"]["metrics"][0]["pods"]["target"]["averageValue"])
    clients = int(4 * target)
    assert clients > spec.batching.preprocess_instances * spec.batching.preprocess_max_batch_size + target
    photo = sample_images["astronaut"].read_bytes()
    stop = threading.Event()

    def client() -> None:
        own = httpclient.InferenceServerClient(triton_server.http_url)
        image = httpclient.InferInput(spec.tensors.image, [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[photo]], dtype=object))
        try:
            while not stop.is_set():
                own.infer(spec.models.ensemble, [image])
        finally:
            own.close()

    query = promql.parse(adapter_query())
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    samples: list[float] = []
    try:
        time.sleep(1.0)  # every client has sent its first request
        for _ in range(10):
            scrape = _scrape(triton_server.metrics_url, POD_LABELS)
            value = promql.evaluate(query, promql.Scrapes(scrape, scrape, 1.0))
            assert isinstance(value, dict)
            samples.append(value[frozenset({("pod", POD_LABELS["pod"])})])
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    print(f"pending per pod under {clients} clients: {samples} (HPA target {target})")
    assert float(np.median(samples)) > target  # saturated: the HPA would scale out

    deadline = time.monotonic() + 30
    while True:
        scrape = _scrape(triton_server.metrics_url, POD_LABELS)
        idle = promql.evaluate(query, promql.Scrapes(scrape, scrape, 1.0))
        if idle == {frozenset({("pod", POD_LABELS["pod"])}): 0.0} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert idle == {frozenset({("pod", POD_LABELS["pod"])}): 0.0}

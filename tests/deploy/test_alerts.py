"""The alerting rules (deploy/prometheus/rules.yml, equal to the Kubernetes PrometheusRule): they parse, read only
metrics that exist, and their expressions, evaluated by tests/deploy/promql.py on the real server's /metrics (started
with compose's tritonserver arguments, summary latencies on), fire when they should and stay quiet when they should.
promtool is not available here; the PromQL subset evaluator refuses anything it cannot evaluate exactly."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.deploy.compose import REPO, load_compose
from tests.deploy.test_monitoring import KNOWN_METRICS, TRITON_SUMMARY_METRICS, promql_metrics

RULES = REPO / "deploy" / "prometheus" / "rules.yml"
INSTANCE = {"instance": "triton:8002"}
"""The target label Prometheus adds to every series it scrapes from the compose service (or a pod's address)."""


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for group in yaml.safe_load(RULES.read_text())["groups"] for r in group["rules"]}


def test_rules_parse_and_read_known_metrics() -> None:
    from tests.deploy import promql

    rules = alerts()
    assert len(rules) >= 6
    for name, rule in rules.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        node = promql.parse(rule["expr"])
        assert isinstance(node, promql.Compare), f"{name}: an alert compares with a threshold"
        assert promql_metrics(rule["expr"]) <= KNOWN_METRICS, name
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), name
        groups = {labels for _, labels in promql.groupings(node)}
        assert groups and all("instance" in g or "Hostname" in g for g in groups), f"{name}: grouped per server"


def _tritonserver_args() -> list[str]:
    """Compose's tritonserver arguments that the launcher passes through (ports and repository are its own)."""
    from dfserve.triton.args import split_tritonserver_args

    _, rest = split_tritonserver_args(load_compose()["services"]["triton"]["command"])
    assert "--metrics-config=summary_latencies=true" in rest
    return rest


@pytest.fixture(scope="module")
def summary_server(built_repo: Path) -> Iterator[Any]:
    from dfserve.triton.process import TritonServer

    server = TritonServer(built_repo, http_port=0, grpc_port=0, metrics_port=0, extra_args=_tritonserver_args())
    server.start(timeout=240)
    try:
        yield server
    finally:
        server.stop()


def _scrape(server: Any) -> dict[str, Any]:
    from tests.deploy import promql

    with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=30) as response:
        return promql.parse_exposition(response.read().decode(), INSTANCE)


def _fires(name: str, scrapes: Any) -> dict[frozenset[tuple[str, str]], float]:
    from tests.deploy import promql

    value = promql.evaluate(promql.parse(alerts()[name]["expr"]), scrapes)
    assert isinstance(value, dict)
    return value


def _left(name: str, scrapes: Any) -> dict[frozenset[tuple[str, str]], float]:
    """The alert's expression without its threshold: the value it compares."""
    from tests.deploy import promql

    node = promql.parse(alerts()[name]["expr"])
    assert isinstance(node, promql.Compare)
    value = promql.evaluate(node.left, scrapes)
    assert isinstance(value, dict)
    return value


@pytest.mark.slow
def test_error_rate_p99_and_queue_rules_on_the_real_server(
    summary_server: Any, built_repo: Path, sample_images: dict[str, Path]
) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from dfserve.spec.model import ModelSpec
    from tests.deploy import promql

    spec = ModelSpec.load(built_repo)
    ensemble = spec.models.ensemble
    client = httpclient.InferenceServerClient(summary_server.http_url)

    def send(data: bytes) -> float:
        tensor = httpclient.InferInput(spec.tensors.image, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=object))
        start = time.perf_counter()
        client.infer(ensemble, [tensor])
        return time.perf_counter() - start

    try:
        photos = [p.read_bytes() for p in sample_images.values()]
        before = _scrape(summary_server)
        start = time.monotonic()
        latencies = [send(data) for data in photos * 3]
        quiet = promql.Scrapes(before, _scrape(summary_server), time.monotonic() - start)
        assert _fires("DfserveHighErrorRate", quiet) == {}  # every request answered
        assert _fires("DfserveQueueTimeHigh", quiet) == {}  # one client: no queue

        failures = 0
        for _ in range(4):  # not an image: preprocess refuses it, the ensemble request fails
            with pytest.raises(InferenceServerException):
                send(b"not an image at all")
            failures += 1
        after = _scrape(summary_server)
        scrapes = promql.Scrapes(quiet.after, after, 5.0)
    finally:
        client.close()

    ratio = _left("DfserveHighErrorRate", scrapes)[frozenset({("instance", INSTANCE["instance"]), ("model", ensemble)})]
    assert ratio == pytest.approx(1.0)  # in this interval only the failures finished
    assert frozenset({("instance", INSTANCE["instance"]), ("model", ensemble)}) in _fires(
        "DfserveHighErrorRate", scrapes
    )
    mixed = promql.Scrapes(before, after, 10.0)
    # Triton 2.51 counts a failed ensemble request twice in nv_inference_request_failure (measured here, and for
    # requests shed at a full queue too), so for the ensemble the rule sees 2f / (2f + s): it fires early, never
    # late. A Triton that counts once fails this line: then halve nothing and update the rule's comment.
    expected = 2 * failures / (2 * failures + len(latencies))
    mixed_ratio = _left("DfserveHighErrorRate", mixed)
    assert mixed_ratio[frozenset({("instance", INSTANCE["instance"]), ("model", ensemble)})] == pytest.approx(expected)

    # p99 from Triton's summary: the server-side time of the slowest requests, so within what the client saw
    p99 = _left("DfserveP99LatencyHigh", mixed)
    ((labels, p99_us),) = p99.items()
    assert dict(labels) == {"instance": INSTANCE["instance"], "model": ensemble}
    assert 0 < p99_us <= max(latencies) * 1e6
    assert set(after) >= TRITON_SUMMARY_METRICS  # what the dashboard's p99 panels read
    assert _fires("DfserveP99LatencyHigh", mixed) == {}  # tiny model: far below the threshold


@pytest.mark.slow
def test_restart_rule_fires_across_a_server_restart_only(built_repo: Path) -> None:
    """A restarted tritonserver (what dfserve's launcher does when a stub dies) starts its counters again; every
    fresh server has run preprocess' warm-up, so the counter the rule reads goes down across the restart."""
    from dfserve.triton.process import TritonServer
    from tests.deploy import promql

    scrapes = []
    for _ in range(2):
        server = TritonServer(built_repo, http_port=0, grpc_port=0, metrics_port=0, extra_args=_tritonserver_args())
        server.start(timeout=240)
        try:
            import tritonclient.http as httpclient

            client = httpclient.InferenceServerClient(server.http_url)
            try:
                first = _scrape(server)
                before_traffic = _left("DfserveTritonRestarted", promql.Scrapes(first, first, 1.0))
                assert before_traffic == {frozenset(INSTANCE.items()): 0.0}
                # traffic on the first server only, so its counter is above a fresh server's
                if not scrapes:
                    from dfserve.spec.model import ModelSpec

                    spec = ModelSpec.load(built_repo)
                    h, w = spec.input_hw
                    for _ in range(3):
                        image = httpclient.InferInput(spec.tensors.image, [1, 1], "BYTES")
                        image.set_data_from_numpy(np.array([[_jpeg(h, w)]], dtype=object))
                        client.infer(spec.models.ensemble, [image])
                scrapes.append(_scrape(server))
            finally:
                client.close()
        finally:
            server.stop()
    executions = {dict(labels)["model"]: value for labels, value in scrapes[1]["nv_inference_exec_count"].items()}
    assert executions["preprocess"] >= 1  # the warm-up, on a server nobody has called yet
    assert scrapes[0]["nv_inference_exec_count"] != scrapes[1]["nv_inference_exec_count"]
    assert _fires("DfserveTritonRestarted", promql.Scrapes(scrapes[0], scrapes[0], 1.0)) == {}
    assert _fires("DfserveTritonRestarted", promql.Scrapes(scrapes[0], scrapes[1], 1.0)) == {
        frozenset(INSTANCE.items()): 1.0
    }


def _jpeg(h: int, w: int) -> bytes:
    from tests.conftest import jpeg_bytes

    return jpeg_bytes(np.full((h * 4, w * 4, 3), 120, dtype=np.uint8))

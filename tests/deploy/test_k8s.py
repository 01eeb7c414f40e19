"""The Kubernetes manifests, rendered by `kubectl kustomize` where kubectl exists (else read resource by resource,
which is the same output minus kustomize's labels and image tags: this base has no patches)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.compose import REPO, load_compose, read_env

K8S = REPO / "deploy" / "k8s"


def render(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run(
            [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    docs: list[dict[str, Any]] = []
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        path = folder / resource
        docs += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return by_kind(render(K8S / "base"))


def test_kustomize_renders_base_and_autoscaling() -> None:
    assert set(by_kind(render(K8S / "base"))) == {"PersistentVolumeClaim", "Job", "Deployment", "Service"}
    assert "HorizontalPodAutoscaler" in by_kind(render(K8S / "autoscaling"))


def test_triton_deployment_has_a_gpu_probes_and_a_read_only_repository(base: dict[str, dict[str, Any]]) -> None:
    pod = base["Deployment"]["spec"]["template"]["spec"]
    (triton,) = pod["containers"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    mounts = {m["name"]: m for m in triton["volumeMounts"]}
    assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "dfserve-models", "readOnly": True}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory" and mounts["dshm"]["mountPath"] == "/dev/shm"
    assert base["PersistentVolumeClaim"]["metadata"]["name"] == "dfserve-models"

    # The same tritonserver arguments and entry point as docker compose.
    compose_triton = load_compose()["services"]["triton"]
    assert triton["args"] == compose_triton["command"]
    assert "command" not in triton  # the image's ENTRYPOINT is start-triton.sh (restricted APIs, engine check)
    key = {e["name"]: e for e in triton["env"]}["DFSERVE_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert key["optional"] is True  # no secret: a random key, admin APIs closed


def test_service_exposes_the_container_ports(base: dict[str, dict[str, Any]]) -> None:
    (triton,) = base["Deployment"]["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    service = base["Service"]["spec"]
    assert {p["name"]: p["targetPort"] for p in service["ports"]} == {n: n for n in container_ports}
    assert container_ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    pod_labels = base["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    assert base["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_build_job_runs_a_tensorrt_build_into_the_shared_volume(base: dict[str, dict[str, Any]]) -> None:
    from dfserve.cli import build_parser

    pod = base["Job"]["spec"]["template"]["spec"]
    (build,) = pod["containers"]
    assert build["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = build_parser().parse_args(build["command"][1:])
    assert (args.engine, args.precision, str(args.out)) == ("tensorrt", "fp16", "/models")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "dfserve-models"
    cache = {e["name"]: e["value"] for e in build["env"]}["DFSERVE_TRT_TIMING_CACHE"]
    assert not cache.startswith("/models/"), "Triton would load any folder in the repository as a model"
    wait = base["Deployment"]["spec"]["template"]["spec"]["initContainers"][0]["command"][-1]
    assert "/models/build_report.json" in wait  # written last by the build


def test_images_use_the_release_pinned_in_env() -> None:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed: image tags are applied by kustomize")
    release = read_env()["TRITON_RELEASE"]
    docs = by_kind(render(K8S / "base"))
    images = {
        c["image"] for kind in ("Deployment", "Job") for c in docs[kind]["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"dfserve-triton:{release}", f"dfserve-build:{release}"}


def test_autoscaler_targets_the_triton_deployment() -> None:
    docs = by_kind(render(K8S / "autoscaling"))
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] == docs["Deployment"]["metadata"]["name"]
    (metric,) = docs["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] in (REPO / "docs" / "gpu.md").read_text()  # the adapter rule is documented

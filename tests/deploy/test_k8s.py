"""The Kubernetes manifests, rendered by `kubectl kustomize` where kubectl exists (else read resource by resource,
which is the same output minus kustomize's labels and image tags: this base has no patches)."""

from __future__ import annotations

import json
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
    for resource in kustomization.get("resources", []):
        path = folder / resource
        docs += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Documents by kind; a second one of a kind (the timing-cache claim) as "Kind/name"."""
    out: dict[str, dict[str, Any]] = {}
    for d in docs:
        key = d["kind"] if d["kind"] not in out else f"{d['kind']}/{d['metadata']['name']}"
        assert key not in out, key
        out[key] = d
    return out


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return by_kind(render(K8S / "base"))


def test_kustomize_renders_base_and_autoscaling() -> None:
    assert set(by_kind(render(K8S / "base"))) == {
        "PersistentVolumeClaim",
        "PersistentVolumeClaim/dfserve-trt-cache",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Job",
        "Deployment",
        "Service",
        "ConfigMap",
    }
    assert "HorizontalPodAutoscaler" in by_kind(render(K8S / "autoscaling"))


def containers(base: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    pod = base["Deployment"]["spec"]["template"]["spec"]
    named = {c["name"]: c for c in pod["containers"]}
    assert set(named) == {"triton", "proxy"}
    return named


def test_triton_deployment_has_a_gpu_probes_and_a_read_only_repository(base: dict[str, dict[str, Any]]) -> None:
    pod = base["Deployment"]["spec"]["template"]["spec"]
    triton = containers(base)["triton"]
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


def test_service_exposes_the_proxy_and_the_metrics_ports(base: dict[str, dict[str, Any]]) -> None:
    """HTTP and gRPC reach Triton only through the nginx sidecar; metrics (Prometheus) go straight to Triton."""
    from dfserve.triton.proxy import CONTAINER_SETTINGS

    named = containers(base)
    triton_ports = {p["name"]: p["containerPort"] for p in named["triton"]["ports"]}
    proxy_ports = {p["name"]: p["containerPort"] for p in named["proxy"]["ports"]}
    assert triton_ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert proxy_ports == {
        "proxy-http": int(CONTAINER_SETTINGS.http_listen),
        "proxy-grpc": int(CONTAINER_SETTINGS.grpc_listen),
    }
    service = base["Service"]["spec"]
    targets = {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]}
    assert targets == {"http": (8000, "proxy-http"), "grpc": (8001, "proxy-grpc"), "metrics": (8002, "metrics")}
    pod_labels = base["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    assert base["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_build_job_runs_a_tensorrt_build_into_the_shared_volume(base: dict[str, dict[str, Any]]) -> None:
    from dfserve.cli import build_parser

    pod = base["Job"]["spec"]["template"]["spec"]
    (build,) = pod["initContainers"]
    assert build["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = build_parser().parse_args(build["command"][1:])
    assert (args.engine, args.precision, str(args.out)) == ("tensorrt", "fp16", "/models")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "dfserve-models"
    cache = {e["name"]: e["value"] for e in build["env"]}["DFSERVE_TRT_TIMING_CACHE"]
    assert not cache.startswith("/models/"), "Triton would load any folder in the repository as a model"
    # the timing cache is on a claim of its own, so it outlives the Job (an emptyDir died with each one)
    mount = next(m["mountPath"] for m in build["volumeMounts"] if m["name"] == "cache")
    assert cache.startswith(mount + "/")
    claim = volumes["cache"]["persistentVolumeClaim"]["claimName"]
    assert base[f"PersistentVolumeClaim/{claim}"]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_images_use_the_release_pinned_in_env() -> None:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed: image tags are applied by kustomize")
    release = read_env()["TRITON_RELEASE"]
    docs = by_kind(render(K8S / "base"))
    pods = [docs[kind]["spec"]["template"]["spec"] for kind in ("Deployment", "Job")]
    images = {c["image"] for pod in pods for c in pod["containers"] + pod.get("initContainers", [])}
    dfserve_images = {i for i in images if i.startswith("dfserve-")}
    assert f"nginx:{read_env()['NGINX_VERSION']}" in images  # the proxy sidecar, as compose's proxy
    assert dfserve_images == {f"dfserve-triton:{release}", f"dfserve-build:{release}"}
    assert all(":" in image for image in images), images  # every helper image pinned too


def test_autoscaler_targets_the_triton_deployment() -> None:
    docs = by_kind(render(K8S / "autoscaling"))
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] == docs["Deployment"]["metadata"]["name"]
    (metric,) = docs["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] in (REPO / "docs" / "gpu.md").read_text()  # the adapter rule is documented


# --- issue 12: build before serving, no GPU held while waiting, no-surge rollouts, least-privilege scale-up ---


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (match,) = [c for c in pod.get("containers", []) + pod.get("initContainers", []) if c["name"] == name]
    return match


def _gpus(container: dict[str, Any]) -> int:
    resources = container.get("resources", {})
    return int(
        resources.get("limits", {}).get("nvidia.com/gpu", resources.get("requests", {}).get("nvidia.com/gpu", 0))
    )


def pod_gpus(pod: dict[str, Any]) -> int:
    """What the scheduler reserves for a pod for its whole life: the larger of its largest init container and
    the sum of its containers (Kubernetes' effective request)."""
    return max([_gpus(c) for c in pod.get("initContainers", [])] + [sum(_gpus(c) for c in pod["containers"])])


def scale_patch(job: dict[str, Any]) -> tuple[str, int]:
    """(deployment name, replicas) that the Job's scale-up step sets, read from its kubectl command."""
    (scaler,) = job["spec"]["template"]["spec"]["containers"]
    command = scaler["command"]
    assert command[:2] == ["kubectl", "patch"], command
    kind, _, name = command[2].partition("/")
    assert kind == "deployment" and "--subresource=scale" in command and "--type=merge" in command
    (patch,) = [a.removeprefix("--patch=") for a in command if a.startswith("--patch=")]
    replicas = json.loads(patch)["spec"]["replicas"]
    assert isinstance(replicas, int)
    return name, replicas


def test_the_build_runs_before_serving_and_one_gpu_is_enough(base: dict[str, dict[str, Any]]) -> None:
    deployment, job = base["Deployment"], base["Job"]
    job_pod = job["spec"]["template"]["spec"]
    # The build is an init container: the scale-up container starts only after it exited 0.
    assert [c["name"] for c in job_pod["initContainers"]] == ["build"]
    assert _gpus(_container(job_pod, "build")) == 1
    assert _gpus(_container(job_pod, "scale-up")) == 0
    assert job_pod["restartPolicy"] == "Never"
    name, replicas = scale_patch(job)
    assert name == deployment["metadata"]["name"] and replicas >= 1

    # Before the Job succeeds the Deployment has 0 pods, so the GPUs held at any moment are: while building,
    # the Job pod's; after it, the Triton pods'. Neither waits for the other while holding a GPU.
    triton_pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 0
    while_building = pod_gpus(job_pod) + deployment["spec"]["replicas"] * pod_gpus(triton_pod)
    after_build = replicas * pod_gpus(triton_pod)
    assert while_building == 1 and after_build == replicas == 1
    assert _gpus(_container(triton_pod, "triton")) == 1
    assert all(_gpus(c) == 0 for c in triton_pod["initContainers"])  # the wait itself asks for no GPU


def test_rollouts_need_no_spare_gpu(base: dict[str, dict[str, Any]]) -> None:
    strategy = base["Deployment"]["spec"]["strategy"]
    if strategy["type"] != "Recreate":
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxSurge"] == 0  # never one pod (one GPU) above the replica count
        assert strategy["rollingUpdate"]["maxUnavailable"] == 1  # so a replaced pod frees its GPU first


def _wait_command(base: dict[str, dict[str, Any]]) -> tuple[list[str], str]:
    pod = base["Deployment"]["spec"]["template"]["spec"]
    wait = _container(pod, "wait-for-build")
    (mount,) = [m for m in wait["volumeMounts"] if m["name"] == "models"]
    assert mount.get("readOnly") is True
    triton_mount = next(m for m in _container(pod, "triton")["volumeMounts"] if m["name"] == "models")
    assert mount["mountPath"] == triton_mount["mountPath"]
    return wait["command"], mount["mountPath"]


def test_wait_uses_the_file_names_of_dfserve_names(base: dict[str, dict[str, Any]]) -> None:
    from dfserve.spec.names import BUILD_MARKER_FILENAME, REPORT_FILENAME

    command, models = _wait_command(base)
    script = command[-1]
    assert f"{models}/{REPORT_FILENAME}" in script and f"{models}/{BUILD_MARKER_FILENAME}" in script
    start_script = (REPO / "deploy" / "triton" / "start-triton.sh").read_text()
    assert f'"$repository/{REPORT_FILENAME}"' in start_script  # the image's own wait, same names
    assert f'"$repository/{BUILD_MARKER_FILENAME}"' in start_script


def test_wait_lets_only_a_finished_build_through(base: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """The init container's own shell command, run here with its volume's mount path pointed at a folder."""
    from dfserve.spec.names import BUILD_MARKER_FILENAME, REPORT_FILENAME

    command, models = _wait_command(base)
    assert command[:2] == ["sh", "-c"]
    script = command[2].replace(models + "/", f"{tmp_path}/")
    assert models + "/" not in script

    def still_waiting() -> bool:
        process = subprocess.Popen(["sh", "-c", script], stdout=subprocess.DEVNULL)
        try:
            process.wait(timeout=2)
            assert process.returncode == 0
            return False
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return True

    assert still_waiting()  # empty volume
    (tmp_path / BUILD_MARKER_FILENAME).write_text("1 now\n")
    assert still_waiting()  # a build started, no report yet
    (tmp_path / REPORT_FILENAME).write_text("{}\n")
    assert still_waiting()  # a stale report while a new build rewrites the repository
    (tmp_path / BUILD_MARKER_FILENAME).unlink()
    assert not still_waiting()  # finished build


def test_scale_up_rbac_is_least_privilege(base: dict[str, dict[str, Any]]) -> None:
    docs = render(K8S / "base")
    assert not {d["kind"] for d in docs} & {"ClusterRole", "ClusterRoleBinding"}
    job_pod = base["Job"]["spec"]["template"]["spec"]
    account = base["ServiceAccount"]["metadata"]["name"]
    assert job_pod["serviceAccountName"] == account
    (rule,) = base["Role"]["rules"]
    name, _ = scale_patch(base["Job"])
    # `kubectl patch --subresource=scale` reads, then patches, the scale subresource: exactly that, of one object.
    assert rule == {
        "apiGroups": ["apps"],
        "resources": ["deployments/scale"],
        "resourceNames": [name],
        "verbs": ["get", "patch"],
    }
    binding = base["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": base["Role"]["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]

    # The token reaches the scaler only, not the build (which runs a downloaded checkpoint's export).
    assert job_pod["automountServiceAccountToken"] is False
    assert base["ServiceAccount"]["automountServiceAccountToken"] is False
    token_volumes = {
        v["name"]
        for v in job_pod["volumes"]
        if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))
    }
    assert len(token_volumes) == 1
    mounted = {
        c["name"]
        for c in job_pod["initContainers"] + job_pod["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] in token_volumes
    }
    assert mounted == {"scale-up"}
    (mount,) = [m for m in _container(job_pod, "scale-up")["volumeMounts"] if m["name"] in token_volumes]
    assert mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount" and mount["readOnly"] is True
    # The serving pods get no API access from this ServiceAccount.
    assert base["Deployment"]["spec"]["template"]["spec"].get("serviceAccountName") in (None, "default")


def test_autoscaler_starts_after_the_build_and_reads_the_engine_queue() -> None:
    from dfserve.spec.model import ModelNames
    from tests.deploy import promql

    docs = by_kind(render(K8S / "autoscaling"))
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    _, replicas = scale_patch(docs["Job"])
    # The HPA does not act on a Deployment at 0 replicas: it takes over once the Job has scaled it up.
    assert docs["Deployment"]["spec"]["replicas"] == 0 and 1 <= hpa["minReplicas"] <= replicas
    (metric,) = hpa["metrics"]
    (rule,) = yaml.safe_load((K8S / "autoscaling" / "prometheus-adapter-rules.yaml").read_text())["rules"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    query = rule["metricsQuery"].replace("<<.LabelMatchers>>", 'namespace="ns",pod="p"').replace("<<.GroupBy>>", "pod")
    (division,) = promql.divisions(promql.parse(query))
    engine = promql.Matcher("model", "=", ModelNames().engine)
    for side in (division.numerator, division.denominator):
        (selector,) = promql.selectors(side)
        assert engine in selector.matchers, selector
    assert "prometheus-adapter-rules.yaml" in (REPO / "docs" / "gpu.md").read_text()


def test_proxy_sidecar_runs_the_committed_nginx_conf(base: dict[str, dict[str, Any]]) -> None:
    """The ConfigMap is generated from deploy/nginx/nginx.conf (the file compose mounts, equal to what
    dfserve.triton.proxy renders: tests/deploy/test_compose.py), mounted as nginx's main configuration; the pod
    resolves the config's upstream host `triton` to its own loopback, where the Triton container listens."""
    from dfserve.triton.proxy import CONTAINER_SETTINGS

    pod = base["Deployment"]["spec"]["template"]["spec"]
    proxy = containers(base)["proxy"]
    (mount,) = proxy["volumeMounts"]
    assert (mount["mountPath"], mount["subPath"], mount["readOnly"]) == ("/etc/nginx/nginx.conf", "nginx.conf", True)
    volume = {v["name"]: v for v in pod["volumes"]}[mount["name"]]
    config_map = base["ConfigMap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"]["nginx.conf"] == (REPO / "deploy" / "nginx" / "nginx.conf").read_text()
    upstream_host = CONTAINER_SETTINGS.http_upstream.rpartition(":")[0]
    assert {"ip": "127.0.0.1", "hostnames": [upstream_host]} in pod["hostAliases"]
    assert "nvidia.com/gpu" not in proxy["resources"].get("limits", {})

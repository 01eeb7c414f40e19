"""The Kubernetes manifests (issue 29), rendered by `kubectl kustomize` for every overlay, validated against the
Kubernetes API's schemas (kubernetes-validate, strict: an unknown or misplaced field fails) and checked for what an
operator relies on: rollouts without downtime, no replica patching, pinned model versions built per GPU model,
pod security, a NetworkPolicy that fences Triton's own ports, alert rules, summary latencies, an ensemble-wide
autoscaling signal, pinned images. The engine-cache init container's script is run here with stand-ins for
`nvidia-smi`, `python3 -c 'import tensorrt'` and `dfserve build` (no GPU or TensorRT here)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.compose import REPO, load_compose, read_env

K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("base", "lab", "autoscaling", "canary")
"""The serving stack's overlays; deploy/k8s/dcgm-exporter (cluster monitoring) is rendered and validated too."""
RENDERED = (*OVERLAYS, "dcgm-exporter")
KUBERNETES_VERSION = "1.32"
ENGINE_CACHE = K8S / "serving" / "engine-cache.sh"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"


def render(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed: the manifests use kustomize components, generators and patches")
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def the(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = named(docs, kind)
    if name is None:
        (only,) = found.values()
        return only
    return found[name]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: render(K8S / overlay) for overlay in RENDERED}


@pytest.fixture(scope="module")
def base(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["base"]


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod.get("initContainers", []) + pod["containers"]}


# --- every overlay renders and validates ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", RENDERED)
def test_overlay_renders_and_validates_against_the_kubernetes_schemas(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = rendered[overlay]
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            assert doc["kind"] == "PrometheusRule"  # a CRD: its schema is checked by test_alert_rules_*
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= (7 if overlay in OVERLAYS else 1)
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), names


def test_the_validator_rejects_what_the_api_server_would(base: list[dict[str, Any]]) -> None:
    """The check can fail: a misspelt field and a wrong type, in the rendered Deployment."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    import copy

    deployment = copy.deepcopy(the(base, "Deployment"))
    deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailabel"] = 0
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = copy.deepcopy(the(base, "Deployment"))
    pod_spec(deployment)["securityContext"]["runAsNonRoot"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --- the facts of issue 29 in the rendered base -----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_deployment_at_zero_replicas_and_nothing_patches_replicas(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[overlay]
    for deployment in named(docs, "Deployment").values():
        assert deployment["spec"].get("replicas", 1) >= 1, deployment["metadata"]["name"]
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount"}
    for workload in [d for d in docs if d["kind"] in ("Deployment", "Job")]:
        for container in containers(pod_spec(workload)).values():
            assert "kubectl" not in " ".join(container.get("command", []) + container.get("args", []))
        assert pod_spec(workload)["automountServiceAccountToken"] is False  # no API credential in any pod


def test_base_rolls_out_without_downtime(base: list[dict[str, Any]]) -> None:
    deployment = the(base, "Deployment")
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0 and strategy["rollingUpdate"]["maxSurge"] >= 1
    assert deployment["spec"]["replicas"] >= 1
    pdb = the(base, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    # a pod turns ready only when Triton is (strict readiness); the rollout waits for that before removing one
    triton = containers(pod_spec(deployment))["triton"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "--strict-readiness=true" in triton["args"]


def test_lab_overlay_replaces_in_place_on_one_gpu(rendered: dict[str, list[dict[str, Any]]]) -> None:
    lab = rendered["lab"]
    strategy = the(lab, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert (strategy["maxSurge"], strategy["maxUnavailable"]) == (0, 1)  # no second GPU for a surge pod
    assert "PodDisruptionBudget" not in {d["kind"] for d in lab}  # would block draining the only node
    claim = the(lab, "PersistentVolumeClaim")["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"] and claim["storageClassName"] == "local-path"


def test_storage_class_is_a_setting(rendered: dict[str, list[dict[str, Any]]]) -> None:
    base_claim = the(rendered["base"], "PersistentVolumeClaim")["spec"]
    assert base_claim["accessModes"] == ["ReadWriteMany"] and base_claim["storageClassName"] == "standard-rwx"
    assert "set-by-kustomization" not in yaml.safe_dump_all(rendered["lab"] + rendered["base"])
    assert "dfserve-settings" not in named(rendered["base"], "ConfigMap")  # read by kustomize, not applied


def test_pods_run_as_non_root_without_privilege_escalation(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in OVERLAYS:
        for workload in [d for d in rendered[overlay] if d["kind"] in ("Deployment", "Job")]:
            pod = pod_spec(workload)
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for name, container in containers(pod).items():
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"] == {"drop": ["ALL"]}, name
                assert context["readOnlyRootFilesystem"] is True, name
                assert container["resources"]["limits"]["memory"], name  # every container bounded


def test_read_only_root_filesystem_leaves_triton_its_writable_paths(base: list[dict[str, Any]]) -> None:
    """Triton and dfserve's launcher write /tmp (the launcher's overlay and key file: tempfile), /dev/shm (the
    Python backend) and nothing else; nginx its pid file and temp folders. Each is an emptyDir."""
    pod = pod_spec(the(base, "Deployment"))
    volumes = {v["name"]: v for v in pod["volumes"]}
    by_container = containers(pod)
    writable = {
        name: {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly") and "emptyDir" in volumes[m["name"]]}
        for name, c in by_container.items()
    }
    assert writable["triton"] == {"/tmp", "/dev/shm"}
    assert writable["proxy"] == {"/var/cache/nginx", "/run"}
    assert {"/store", "/models", "/tmp"} <= {m["mountPath"] for m in by_container["engine"]["volumeMounts"]}
    triton_mounts = {m["mountPath"]: m for m in by_container["triton"]["volumeMounts"]}
    assert triton_mounts["/models"]["readOnly"] is True and "emptyDir" in volumes[triton_mounts["/models"]["name"]]


def test_network_policy_admits_only_the_proxy_ports_and_metrics_from_monitoring(base: list[dict[str, Any]]) -> None:
    deployment = the(base, "Deployment")
    policy = the(base, "NetworkPolicy")["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    ports = {
        c["name"]: {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for c in pod_spec(deployment)["containers"]
    }
    admitted: dict[str, list[dict[str, Any]]] = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            admitted[port["port"]] = rule.get("from", [])
    assert set(admitted) == {*ports["proxy"], "metrics"}
    assert not {"http", "grpc", 8000, 8001} & set(admitted)  # Triton's own HTTP and gRPC: the proxy's only
    assert admitted["proxy-http"] == admitted["proxy-grpc"] == []  # clients anywhere, through the proxy
    (monitoring,) = admitted["metrics"]
    assert set(monitoring) == {"namespaceSelector"}
    # every Service port the cluster reaches is one the policy admits
    service = the(base, "Service", "dfserve-triton")["spec"]
    assert {p["targetPort"] for p in service["ports"]} <= set(admitted)


def test_alert_rules_are_the_compose_rules_and_cover_the_signals(base: list[dict[str, Any]]) -> None:
    rule = the(base, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) >= {
        "DfserveHighErrorRate",
        "DfserveQueueTimeHigh",
        "DfserveP99LatencyHigh",
        "DfserveTritonRestarted",
        "DfserveGpuSaturated",
    }
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("page", "warning"), name
        assert alert["annotations"]["summary"], name


def test_triton_runs_with_summary_latencies_as_in_compose(base: list[dict[str, Any]]) -> None:
    triton = containers(pod_spec(the(base, "Deployment")))["triton"]
    assert "--metrics-config=summary_latencies=true" in triton["args"]
    assert triton["args"] == load_compose()["services"]["triton"]["command"]  # the same tritonserver arguments
    assert "command" not in triton  # the image's ENTRYPOINT is start-triton.sh (restricted APIs, sizing, engine check)


def test_gpu_pods_land_on_gpu_nodes_with_memory_limits(base: list[dict[str, Any]]) -> None:
    pod = pod_spec(the(base, "Deployment"))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    by_name = containers(pod)
    assert by_name["triton"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert by_name["engine"]["resources"]["limits"]["nvidia.com/gpu"] == 1  # the pod's own GPU: one is enough
    assert "nvidia.com/gpu" not in by_name["proxy"]["resources"]["limits"]


def test_shared_memory_and_cpu_limit_fit_the_preprocess_sizing(base: list[dict[str, Any]]) -> None:
    """/dev/shm holds the capped number of stubs; the CPU limit is what sizing reads (cgroup cpu.max)."""
    from dfserve.triton import sizing

    pod = pod_spec(the(base, "Deployment"))
    dshm = {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]
    assert dshm["medium"] == "Memory"
    need = sizing.shm_bytes(sizing.MAX_PREPROCESS_INSTANCES)
    assert _quantity(dshm["sizeLimit"]) >= need
    compose_shm = load_compose()["services"]["triton"]["shm_size"]
    assert _quantity(compose_shm.upper().replace("GB", "Gi").replace("MB", "Mi")) >= need
    cpus = int(containers(pod)["triton"]["resources"]["limits"]["cpu"])
    assert 1 <= sizing.preprocess_instances(cpus) == cpus <= sizing.MAX_PREPROCESS_INSTANCES


def _quantity(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def test_third_party_images_are_pinned_by_digest(rendered: dict[str, list[dict[str, Any]]]) -> None:
    env = read_env()
    release = env["TRITON_RELEASE"]
    for overlay in OVERLAYS:
        images = {
            c["image"]
            for d in rendered[overlay]
            if d["kind"] in ("Deployment", "Job")
            for c in containers(pod_spec(d)).values()
        }
        ours = {i for i in images if i.startswith("dfserve-")}
        assert ours <= {f"dfserve-triton:{release}", f"dfserve-build:{release}"}, overlay
        for image in images - ours:
            name, _, digest = image.partition("@sha256:")
            assert len(digest) == 64 and int(digest, 16) >= 0, image
            assert ":" in name, image  # the tag too, for people
        assert f"nginx:{env['NGINX_VERSION']}" in {i.partition("@")[0] for i in images}  # as compose's proxy


def test_service_targets_the_proxy_and_selects_every_track(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from dfserve.triton.proxy import CONTAINER_SETTINGS

    docs = rendered["canary"]
    service = the(docs, "Service", "dfserve-triton")["spec"]
    targets = {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]}
    assert targets == {"http": (8000, "proxy-http"), "grpc": (8001, "proxy-grpc"), "metrics": (8002, "metrics")}
    deployments = named(docs, "Deployment")
    assert set(deployments) == {"dfserve-triton", "dfserve-triton-canary"}
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["selector"].items() <= labels.items()  # traffic shifts by ready pods of both tracks
        proxy = containers(pod_spec(deployment))["proxy"]
        assert {p["name"]: p["containerPort"] for p in proxy["ports"]} == {
            "proxy-http": int(CONTAINER_SETTINGS.http_listen),
            "proxy-grpc": int(CONTAINER_SETTINGS.grpc_listen),
        }
    stable, canary = (deployments[n]["spec"]["selector"]["matchLabels"] for n in deployments)
    assert stable["app.kubernetes.io/track"] != canary["app.kubernetes.io/track"]  # disjoint: no fight over pods


def _model(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    engine = containers(pod_spec(deployment))["engine"]
    (source,) = engine["envFrom"]
    return the(docs, "ConfigMap", source["configMapRef"]["name"])["data"]  # type: ignore[no-any-return]


def test_canary_serves_a_new_version_and_verify_is_a_bounded_gate_through_the_proxy(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from dfserve.cli import build_parser

    docs = rendered["canary"]
    deployments = named(docs, "Deployment")
    stable, canary = (_model(docs, deployments[n]) for n in ("dfserve-triton", "dfserve-triton-canary"))
    assert stable["DFSERVE_MODEL_VERSION"] != canary["DFSERVE_MODEL_VERSION"]
    assert _model(rendered["base"], the(rendered["base"], "Deployment")) == stable  # the stable track is the base's

    job = the(docs, "Job", "dfserve-verify-canary")["spec"]
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] <= 3600 and job["ttlSecondsAfterFinished"] > 0
    verify = containers(job["template"]["spec"])["verify"]
    (source,) = verify["envFrom"]
    assert the(docs, "ConfigMap", source["configMapRef"]["name"])["data"] == canary  # verifies what the canary serves
    script = verify["args"][-1]
    argv = shlex.split(script.replace('"$DFSERVE_MODEL"', "ckpt"))
    argv = [a for a in argv if "$" not in a]
    assert argv[:2] == ["exec", "dfserve"]
    args = build_parser().parse_args(argv[2:])
    assert args.command == "verify" and args.model == "ckpt"
    host, _, port = args.url.removeprefix("http://").partition(":")
    canary_service = the(docs, "Service", host)["spec"]
    (target,) = [p["targetPort"] for p in canary_service["ports"] if str(p["port"]) == port]
    assert target == "proxy-http"  # through the canary's proxy, like any client
    assert canary_service["selector"]["app.kubernetes.io/track"] == "canary"


def test_autoscaler_owns_the_replicas_and_reads_the_whole_ensemble(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from dfserve.spec.model import ModelNames
    from tests.deploy import promql

    docs = rendered["autoscaling"]
    hpa = the(docs, "HorizontalPodAutoscaler")["spec"]
    deployment = the(docs, "Deployment")
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"]  # a sync must not reset what the HPA chose
    (metric,) = hpa["metrics"]
    (rule,) = yaml.safe_load((K8S / "autoscaling" / "prometheus-adapter-rules.yaml").read_text())["rules"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    query = rule["metricsQuery"].replace("<<.LabelMatchers>>", 'namespace="ns",pod="p"').replace("<<.GroupBy>>", "pod")
    (selector,) = promql.selectors(promql.parse(query))
    assert selector.metric == "nv_inference_pending_request_count"
    (model,) = [m for m in selector.matchers if m.label == "model"]
    names = ModelNames()
    assert {n for n in (names.engine, names.preprocess, names.ensemble) if model.matches({"model": n})} == {
        names.engine,
        names.preprocess,
    }


# --- the engine-cache init container, run for real with stand-ins -------------------------------------------


def _stand_ins(folder: Path) -> Path:
    """nvidia-smi (GPU name from FAKE_GPU), python3 (answers `import tensorrt` with FAKE_TRT) and dfserve (a
    build: records its arguments, waits FAKE_BUILD_S, writes a finished repository unless FAKE_BUILD_RC != 0)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    scripts = {
        "nvidia-smi": 'echo "$FAKE_GPU"\n',
        "python3": 'echo "${FAKE_TRT:-10.5.0}"\n',
        "dfserve": (
            'echo "$@" >> "$FAKE_LOG"\n'
            'out=""; prev=""; for a in "$@"; do [ "$prev" = --out ] && out="$a"; prev="$a"; done\n'
            'mkdir -p "$out/vit/1"; echo plan > "$out/vit/1/model.plan"\n'
            # FAKE_BARRIER: wait (at most 30 s) until FAKE_PODS builds are running, so that they overlap for sure
            'if [ -n "${FAKE_BARRIER:-}" ]; then touch "$FAKE_BARRIER.$$"; n=0\n'
            '  while [ "$(ls "$FAKE_BARRIER".* | wc -l)" -lt "$FAKE_PODS" ] && [ $n -lt 300 ]; do\n'
            "    sleep 0.1; n=$((n+1))\n"
            "  done\n"
            "fi\n"
            'sleep "${FAKE_BUILD_S:-0}"\n'
            '[ "${FAKE_BUILD_RC:-0}" = 0 ] || exit "$FAKE_BUILD_RC"\n'
            'echo "{}" > "$out/build_report.json"\n'
        ),
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _engine_cache(tmp: Path, out: str = "models", timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp / "bin" if (tmp / "bin").is_dir() else _stand_ins(tmp)
    (tmp / out).mkdir(exist_ok=True)
    run_env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "DFSERVE_STORE": str(tmp / "store"),
        "DFSERVE_SERVE_DIR": str(tmp / out),
        "DFSERVE_MODEL_VERSION": "v1",
        "DFSERVE_MODEL": "org/model",
        "DFSERVE_REVISION": "abc123",
        "FAKE_GPU": "NVIDIA H100 80GB HBM3",
        "FAKE_LOG": str(tmp / "builds.log"),
        "HOSTNAME": out,
        **env,
    }
    return subprocess.run(["sh", str(ENGINE_CACHE)], env=run_env, capture_output=True, text=True, timeout=timeout)


def _builds(tmp: Path) -> list[str]:
    log = tmp / "builds.log"
    return log.read_text().splitlines() if log.exists() else []


def test_engine_cache_builds_once_per_version_and_gpu_model_then_reuses(tmp_path: Path) -> None:
    first = _engine_cache(tmp_path)
    assert first.returncode == 0, first.stderr
    (build_args,) = _builds(tmp_path)
    from dfserve.cli import build_parser

    args = build_parser().parse_args(build_args.split())
    assert args.command == "build"
    assert (args.engine, args.precision, args.model, args.revision) == ("tensorrt", "fp16", "org/model", "abc123")
    built = tmp_path / "store" / "v1" / "NVIDIA-H100-80GB-HBM3-trt10.5.0"
    assert (built / "build_report.json").is_file()
    assert (tmp_path / "models" / "build_report.json").is_file()  # the pod's own copy
    assert (tmp_path / "models" / "vit" / "1" / "model.plan").read_text() == "plan\n"

    (tmp_path / "models" / "stale").write_text("from an earlier start")
    again = _engine_cache(tmp_path)
    assert again.returncode == 0 and "reusing" in again.stdout
    assert len(_builds(tmp_path)) == 1  # cached: no second build
    assert not (tmp_path / "models" / "stale").exists()  # the copy is exactly the build

    other_gpu = _engine_cache(tmp_path, FAKE_GPU="NVIDIA L4")
    assert other_gpu.returncode == 0
    other_trt = _engine_cache(tmp_path, FAKE_TRT="10.8.0")
    assert other_trt.returncode == 0
    assert len(_builds(tmp_path)) == 3  # a plan runs only on its GPU model and TensorRT: one build each
    assert sorted(p.name for p in (tmp_path / "store" / "v1").iterdir() if p.is_dir()) == [
        "NVIDIA-H100-80GB-HBM3-trt10.5.0",
        "NVIDIA-H100-80GB-HBM3-trt10.8.0",
        "NVIDIA-L4-trt10.5.0",
    ]
    new_version = _engine_cache(tmp_path, DFSERVE_MODEL_VERSION="v2", DFSERVE_REVISION="def456")
    assert new_version.returncode == 0 and len(_builds(tmp_path)) == 4
    assert (built / "build_report.json").is_file()  # v1 stays for a rollback


def test_engine_cache_refuses_a_version_name_reused_for_another_model(tmp_path: Path) -> None:
    assert _engine_cache(tmp_path).returncode == 0
    reused = _engine_cache(tmp_path, DFSERVE_REVISION="other")
    assert reused.returncode == 1 and reused.stdout.strip() == ""
    assert "model version v1 in" in reused.stderr and "give this one a new version name" in reused.stderr
    bad = _engine_cache(tmp_path, DFSERVE_MODEL_VERSION="../v1")
    assert bad.returncode == 2 and "must be letters, digits" in bad.stderr


def test_engine_cache_publishes_nothing_from_a_failed_or_timed_out_build(tmp_path: Path) -> None:
    failed = _engine_cache(tmp_path, FAKE_BUILD_RC="3")
    assert failed.returncode == 3
    version = tmp_path / "store" / "v1"
    assert [p.name for p in version.iterdir()] == ["model.env"]  # no half-written build under its final name
    assert not (tmp_path / "models" / "build_report.json").exists()
    slow = _engine_cache(tmp_path, FAKE_BUILD_S="4", DFSERVE_BUILD_TIMEOUT_S="1")
    assert slow.returncode == 124  # timeout(1)'s status: the pod's init container fails and is retried
    assert [p.name for p in version.iterdir()] == ["model.env"]
    assert _engine_cache(tmp_path).returncode == 0  # the next try builds


def test_engine_cache_two_pods_building_at_once_publish_one_build(tmp_path: Path) -> None:
    _stand_ins(tmp_path)
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def pod(name: str) -> None:
        results[name] = _engine_cache(tmp_path, out=name, FAKE_BARRIER=str(tmp_path / "running"), FAKE_PODS="2")

    threads = [threading.Thread(target=pod, args=(name,)) for name in ("pod-a", "pod-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(r.returncode == 0 for r in results.values()), {n: r.stderr for n, r in results.items()}
    assert len(_builds(tmp_path)) == 2  # both built at once (neither waits on the other) ...
    assert sum("another pod published" in r.stdout for r in results.values()) == 1  # ... one rename won
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []  # the loser's copy is gone
    for name in ("pod-a", "pod-b"):
        assert (tmp_path / name / "build_report.json").is_file()


def test_init_container_runs_the_committed_script_with_its_settings(base: list[dict[str, Any]]) -> None:
    deployment = the(base, "Deployment")
    pod = pod_spec(deployment)
    engine = containers(pod)["engine"]
    assert [c["name"] for c in pod["initContainers"]] == ["engine"]
    assert engine["command"] == ["sh", "/opt/dfserve/engine-cache.sh"]
    (mount,) = [m for m in engine["volumeMounts"] if m["mountPath"] == "/opt/dfserve/engine-cache.sh"]
    config_map = {v["name"]: v for v in pod["volumes"]}[mount["name"]]["configMap"]["name"]
    assert the(base, "ConfigMap", config_map)["data"]["engine-cache.sh"] == ENGINE_CACHE.read_text()
    env = {e["name"]: e.get("value") for e in engine["env"]}
    mounts = {m["mountPath"]: m["name"] for m in engine["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[env["DFSERVE_STORE"]]]["persistentVolumeClaim"]["claimName"] == "dfserve-models"
    assert mounts[env["DFSERVE_SERVE_DIR"]] == next(
        m["name"] for m in containers(pod)["triton"]["volumeMounts"] if m["mountPath"] == "/models"
    )
    assert not env["DFSERVE_TRT_TIMING_CACHE"].startswith(env["DFSERVE_SERVE_DIR"] + "/")
    model = _model(base, deployment)
    assert set(model) == {
        "DFSERVE_MODEL_VERSION",
        "DFSERVE_MODEL",
        "DFSERVE_REVISION",
        "DFSERVE_PRECISION",
        "DFSERVE_BUILD_ARGS",
    }
    script = ENGINE_CACHE.read_text()
    assert all(f"${{{name}" in script or f"${name}" in script for name in model)
    assert os.access(ENGINE_CACHE, os.X_OK)


def test_dcgm_exporter_runs_on_every_gpu_node_without_taking_a_gpu(rendered: dict[str, list[dict[str, Any]]]) -> None:
    daemonset = the(rendered["dcgm-exporter"], "DaemonSet")
    pod = pod_spec(daemonset)
    assert pod["nodeSelector"] == pod_spec(the(rendered["base"], "Deployment"))["nodeSelector"]
    (container,) = pod["containers"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})  # serving pods keep every GPU
    assert container["resources"]["limits"]["memory"]
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"]) == "9400"
    name, _, digest = container["image"].partition("@sha256:")
    assert len(digest) == 64
    assert name == f"nvcr.io/nvidia/k8s/dcgm-exporter:{read_env()['DCGM_EXPORTER_VERSION']}"  # as compose's
    # The one exception to the non-root rule, said plainly: DCGM's host engine runs as root with SYS_ADMIN.
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert pod["automountServiceAccountToken"] is False

"""docker-compose.yml, .env and the Dockerfiles, checked without Docker (there is no Docker engine here).

The schema check uses the Compose Specification's JSON schema from the shared folder beside the repository;
the commands the containers run are executed here with stand-ins for `dfserve` and `tritonserver` that print
their arguments, and those arguments are parsed by dfserve's real CLI parser.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dfserve.spec.names import ADMIN_KEY_HEADER, BUILD_MARKER_FILENAME
from tests.deploy.compose import (
    COMPOSE_FILE,
    COMPOSE_SCHEMA,
    REPO,
    InterpolationError,
    interpolate,
    load_compose,
    read_env,
)
from tests.engines import write_plan_with_record

START_SCRIPT = REPO / "deploy" / "triton" / "start-triton.sh"


def _proxy_url() -> str:
    from dfserve.triton.proxy import CONTAINER_SETTINGS

    return f"http://proxy:{CONTAINER_SETTINGS.http_listen}"


PROXY_URL = _proxy_url()
"""Where every client of the stack (verify, Locust) sends requests: the compose service `proxy`'s HTTP listener."""


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return read_env()


@pytest.fixture(scope="module")
def compose(env: dict[str, str]) -> dict[str, Any]:
    return load_compose(env)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]  # type: ignore[no-any-return]


def compose_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    if not COMPOSE_SCHEMA.is_file():
        pytest.skip(f"Compose JSON schema not found at {COMPOSE_SCHEMA} (the shared/ folder beside the repository)")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    return jsonschema.Draft7Validator(schema)


# ---------------------------------------------------------------------------------------------------------------
# Interpolation and the schema


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET}/${EMPTY:-d}/${EMPTY-d}/${UNSET:-${SET}x}/$$HOME/$SET", env) == "v/d//vx/$HOME/v"
    assert interpolate("${SET:+--flag ${SET}}|${EMPTY:+no}|${EMPTY+yes}", env) == "--flag v||yes"
    with pytest.raises(InterpolationError, match="UNSET is not set"):
        interpolate("${UNSET}", env)
    with pytest.raises(InterpolationError, match="required variable EMPTY is missing: give it"):
        interpolate("${EMPTY:?give it}", env)
    with pytest.raises(InterpolationError, match="unclosed"):
        interpolate("${SET", env)


def test_compose_file_is_valid_against_the_compose_schema(compose: dict[str, Any]) -> None:
    validator = compose_validator()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []

    broken = copy.deepcopy(compose)  # the validator does reject what Compose rejects
    broken["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["gpu"] = True
    broken["services"]["verify"]["depends_on"]["triton"]["condition"] = "service_finished"
    assert len(list(validator.iter_errors(broken))) == 2


def test_every_variable_comes_from_env_and_every_setting_is_used(env: dict[str, str]) -> None:
    used: set[str] = set()
    load_compose(env, used)
    required = {name for name in used if not name.endswith("?")}
    assert required <= set(env), f"used without a default and missing from .env: {required - set(env)}"
    optional = {name.rstrip("?") for name in used if name.endswith("?")}
    assert set(env) <= required | optional, f".env settings nothing uses: {set(env) - required - optional}"
    assert "HF_TOKEN" in optional and "HF_TOKEN" not in env  # a secret: from the environment only
    assert env["DFSERVE_ADMIN_KEY"] == ""  # no committed key: empty means a random one per start


def test_ports_and_versions_live_in_env_only(env: dict[str, str]) -> None:
    text = COMPOSE_FILE.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for published in re.findall(r"^\s*-\s*(\S+:\d+)\s*$", body, re.MULTILINE):
        assert published.startswith("${BIND_ADDRESS}:${"), f"published port not from .env: {published}"
    for image in re.findall(r"^\s*image:\s*(\S+)", body, re.MULTILINE):
        tag = image.rpartition(":")[2]
        assert tag.startswith("${") or tag == "local", f"image tag not from .env: {image}"
    assert re.fullmatch(r"\d\d\.\d\d", env["TRITON_RELEASE"])
    assert env["BIND_ADDRESS"] == "127.0.0.1"  # like `dfserve serve`: local unless asked


# ---------------------------------------------------------------------------------------------------------------
# Build and Triton


def _devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service["deploy"]["resources"]["reservations"]["devices"]  # type: ignore[no-any-return]


def test_build_and_triton_reserve_nvidia_gpus(services: dict[str, Any], env: dict[str, str]) -> None:
    for name in ("build", "triton"):
        (device,) = _devices(services[name])
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
    assert _devices(services["build"])[0]["count"] == 1  # the engine is built for one GPU
    assert _devices(services["triton"])[0]["count"] == env["TRITON_GPUS"]
    for name in ("locust-master", "locust-worker", "prometheus", "grafana"):
        assert "deploy" not in services[name] or "resources" not in services[name]["deploy"], name


def test_triton_serves_the_built_volume_read_only_after_a_successful_build(services: dict[str, Any]) -> None:
    triton, build = services["triton"], services["build"]
    assert "depends_on" not in triton  # `docker compose up triton` must not re-run the build ...
    assert build["profiles"] == ["build"]  # ... nor does a plain `up`: the build runs on its own
    (models,) = [v for v in triton["volumes"] if isinstance(v, dict) and v["target"] == "/models"]
    assert models == {"type": "volume", "source": "models", "target": "/models", "read_only": True}
    assert "models:/models" in build["volumes"]  # the build writes the same named volume
    assert "--model-repository=/models" in triton["command"]
    assert "--model-control-mode=none" in triton["command"]
    assert int(triton["shm_size"].rstrip("gb")) >= 1  # the Python backend's shared memory
    assert triton["init"] is True  # the launcher is no reaper: stubs of a killed tritonserver go to PID 1


def compose_dependencies(services: dict[str, Any], name: str) -> set[str]:
    """The services `docker compose up NAME` starts besides NAME: Compose (compose-go's GetDependencies) follows
    depends_on (list or mapping), links, volumes_from and network_mode/ipc/pid `service:X`, transitively, and
    enables a dependency's profile for it."""
    found: set[str] = set()
    todo = [name]
    while todo:
        service = services[todo.pop()]
        direct = set(service.get("depends_on", []))  # a list, or a mapping whose keys are services
        direct |= {link.split(":")[0] for link in service.get("links", [])}
        for source in service.get("volumes_from", []):  # SERVICE[:ro], service:SERVICE[:ro], container:ID
            if not source.startswith("container:"):
                direct.add(source.removeprefix("service:").split(":")[0])
        for key in ("network_mode", "ipc", "pid"):
            value = service.get(key, "")
            if isinstance(value, str) and value.startswith("service:"):
                direct.add(value.removeprefix("service:"))
        for dependency in direct - found:
            assert dependency in services, f"{name} depends on an unknown service {dependency}"
            found.add(dependency)
            todo.append(dependency)
    return found


def test_up_triton_starts_nothing_that_builds(services: dict[str, Any]) -> None:
    """`docker compose up triton` (and a plain `up`) must not start `build`, by any of Compose's dependency
    kinds, not only depends_on."""
    assert "build" not in compose_dependencies(services, "triton")
    plain_up = {n for n, s in services.items() if not s.get("profiles")}
    assert "build" not in plain_up | {d for n in plain_up for d in compose_dependencies(services, n)}
    # The check sees every kind: a service reached only through, e.g., network_mode counts.
    probe = {**services, "x": {"network_mode": "service:y"}, "y": {"volumes_from": ["service:build:ro"]}}
    assert compose_dependencies(probe, "x") == {"y", "build"}
    assert compose_dependencies({**services, "z": {"links": ["build:b"]}}, "z") == {"build"}


def test_triton_healthcheck_asks_readiness_on_the_http_port(services: dict[str, Any], env: dict[str, str]) -> None:
    triton = services["triton"]
    command = triton["command"]
    ports = {
        name: int(a.split("=")[1])
        for a in command
        for name in ("http", "grpc", "metrics")
        if a.startswith(f"--{name}-port=")
    }
    test = triton["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "curl" and "-f" in test[2]
    assert test[-1] == f"http://localhost:{ports['http']}/v2/health/ready"
    # HTTP and gRPC are published by the proxy only (tests below); triton publishes its metrics
    assert triton["ports"] == [f"{env['BIND_ADDRESS']}:{env['METRICS_PORT']}:{ports['metrics']}"]


def test_only_the_proxy_publishes_http_and_grpc_with_the_rendered_config(
    services: dict[str, Any], env: dict[str, str]
) -> None:
    """The proxy runs the committed deploy/nginx/nginx.conf, which is exactly what dfserve.triton.proxy renders for
    the container settings (one source: regenerate with `python -m dfserve.triton.proxy`), listens where the
    published ports point, and forwards to the triton service's HTTP and gRPC ports."""
    from dfserve.triton.hardening import DEFAULT_MAX_REQUEST_BYTES
    from dfserve.triton.proxy import CONTAINER_SETTINGS, render_config

    committed = REPO / "deploy" / "nginx" / "nginx.conf"
    assert committed.read_text() == render_config(CONTAINER_SETTINGS)
    assert CONTAINER_SETTINGS.max_body_bytes == DEFAULT_MAX_REQUEST_BYTES
    proxy, triton = services["proxy"], services["triton"]
    assert proxy["image"] == f"nginx:{env['NGINX_VERSION']}"
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert proxy["ports"] == [
        f"{env['BIND_ADDRESS']}:{env['HTTP_PORT']}:{CONTAINER_SETTINGS.http_listen}",
        f"{env['BIND_ADDRESS']}:{env['GRPC_PORT']}:{CONTAINER_SETTINGS.grpc_listen}",
    ]
    ports = {a.split("=")[0]: a.split("=")[1] for a in triton["command"] if a.endswith(tuple("0123456789"))}
    assert CONTAINER_SETTINGS.http_upstream == f"triton:{ports['--http-port']}"
    assert CONTAINER_SETTINGS.grpc_upstream == f"triton:{ports['--grpc-port']}"
    assert proxy["depends_on"] == {"triton": {"condition": "service_started"}}
    published = [p for name, service in services.items() for p in service.get("ports", []) if name != "proxy"]
    assert not any(p.endswith((":8000", ":8001")) or "HTTP_PORT" in p or "GRPC_PORT" in p for p in published)


def _from_lines(dockerfile: Path) -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE)


def test_build_and_triton_images_come_from_one_nvidia_release(services: dict[str, Any], env: dict[str, str]) -> None:
    release = env["TRITON_RELEASE"]
    build, triton = services["build"], services["triton"]
    assert build["build"]["args"] == {"TRITON_RELEASE": release} == triton["build"]["args"]
    assert _from_lines(REPO / build["build"]["dockerfile"]) == ["nvcr.io/nvidia/tensorrt:${TRITON_RELEASE}-py3"]
    assert _from_lines(REPO / triton["build"]["dockerfile"]) == ["nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3"]
    assert build["image"].endswith(f":{release}") and triton["image"].endswith(f":{release}")
    for dockerfile in (REPO / "deploy").glob("*.Dockerfile"):
        text = dockerfile.read_text()
        assert not re.search(r"\b\d\d\.\d\d-py3\b", text), f"{dockerfile.name} pins a release of its own"
        assert re.search(r"^ARG \w+$", text, re.MULTILINE), f"{dockerfile.name}: version must come from compose"
        assert (dockerfile.parent / (dockerfile.name + ".dockerignore")).is_file(), "the context would carry .venv"


def test_build_image_installs_dfserve_with_the_containers_own_tensorrt() -> None:
    text = (REPO / "build" / "Dockerfile").read_text()
    assert "[build,gpu]" in text
    assert "tensorrt==$(python3 -c 'import tensorrt; print(tensorrt.__version__)')" in text  # no PyPI TensorRT
    # ... and a check after the installs that Python's TensorRT is the container's (dfserve.engine.tensorrt)
    installs = text.index("pip install --no-cache-dir -c /tmp/constraints.txt")
    assert text.index("python3 -m dfserve.engine.tensorrt check-install") > installs
    assert "download.pytorch.org/whl/cpu" in text
    triton = (REPO / "deploy" / "triton.Dockerfile").read_text()
    assert "COPY deploy/triton/start-triton.sh /opt/dfserve/start-triton.sh" in triton
    assert 'ENTRYPOINT ["/opt/dfserve/start-triton.sh"]' in triton


def test_bench_profiles_measure_the_served_models_and_the_engine(services: dict[str, Any], env: dict[str, str]) -> None:
    """`bench`: perf_analyzer from NVIDIA's SDK image of the same release, against the running triton; its
    arguments parse with the bench's own parser. `bench-engine`: trtexec in the build image, on a GPU."""
    from dfserve.bench import perf_analyzer

    bench, engine = services["bench"], services["bench-engine"]
    assert bench["profiles"] == ["bench"] and engine["profiles"] == ["bench-engine"]
    assert _from_lines(REPO / bench["build"]["dockerfile"]) == ["nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3-sdk"]
    assert bench["build"]["args"] == {"TRITON_RELEASE": env["TRITON_RELEASE"]}
    assert bench["depends_on"]["triton"]["condition"] == "service_healthy"
    text = (REPO / bench["build"]["dockerfile"]).read_text()
    assert 'ENTRYPOINT ["python3", "-m", "dfserve.bench.perf_analyzer"]' in text
    parsed = perf_analyzer.build_parser().parse_args(bench["command"])
    assert (str(parsed.repository), parsed.url, parsed.models) == ("/models", "triton:8001", "vit,detector")
    assert engine["image"] == services["build"]["image"]  # trtexec of the TensorRT that built the plan
    assert engine["command"][:3] == ["python3", "-m", "dfserve.bench.trtexec"]
    assert engine["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for service in (bench, engine):
        models = next(v for v in service["volumes"] if isinstance(v, dict) and v["target"] == "/models")
        assert models["read_only"] is True


# ---------------------------------------------------------------------------------------------------------------
# The commands the containers run, executed with stand-ins


def _stand_in(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_build_command(services: dict[str, Any], tmp_path: Path, **settings: str) -> list[str]:
    """Run the build service's command with .env values (plus `settings`) and a `dfserve` that prints argv."""
    env = {**read_env(), **settings}
    build = load_compose(env)["services"]["build"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _stand_in(bin_dir, "dfserve", 'for a in "$@"; do printf "%s\\n" "$a"; done\n')
    run_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **{k: str(v) for k, v in build["environment"].items()}}
    result = subprocess.run(build["command"], env=run_env, capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.splitlines()


def test_build_command_is_a_valid_dfserve_build_invocation(services: dict[str, Any], tmp_path: Path) -> None:
    from dfserve.cli import build_parser

    argv = _run_build_command(services, tmp_path)
    assert argv == ["build", "--engine", "tensorrt", "--precision", "fp16", "--out", "/models"]
    args = build_parser().parse_args(argv)
    assert (args.command, args.engine, args.precision, str(args.out)) == ("build", "tensorrt", "fp16", "/models")

    argv = _run_build_command(
        services,
        tmp_path,
        MODEL_ID="org/some model",
        MODEL_REVISION="abc123",
        PRECISION="fp32",
        BUILD_ARGS="--max-batch-size 64 --random-weights",
    )
    args = build_parser().parse_args(argv)
    assert (args.model, args.revision, args.precision) == ("org/some model", "abc123", "fp32")
    assert args.max_batch_size == 64 and args.random_weights


def _run_start_script(
    tmp_path: Path, args: list[str], admin_key: str | None, wait: str = "0"
) -> subprocess.CompletedProcess[str]:
    """Run the entry point with a `dfserve` that prints its arguments (the launcher's own run is
    tests/deploy/test_entrypoint.py, against the real tritonserver)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _stand_in(bin_dir, "dfserve", 'for a in "$@"; do printf "%s\\n" "$a"; done\n')
    _stand_in(bin_dir, "python3", f'exec {shlex.quote(sys.executable)} "$@"\n')
    run_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"), "DFSERVE_BUILD_WAIT_S": wait}
    if admin_key is not None:
        run_env["DFSERVE_ADMIN_KEY"] = admin_key
    return subprocess.run(
        [str(START_SCRIPT), *args], env=run_env, capture_output=True, text=True, timeout=60, check=False
    )


def test_triton_start_hands_tritonservers_arguments_to_the_launcher(services: dict[str, Any], tmp_path: Path) -> None:
    """The entry point runs `dfserve serve` (admin key erased from tritonserver's command line, stub watchdog,
    leftover cleanup) with compose's tritonserver arguments after `--`, never with the key on any command line;
    the launcher reads those arguments as its repository and ports and passes nothing else through."""
    from dfserve.cli import build_parser
    from dfserve.triton.args import split_tritonserver_args

    assert os.access(START_SCRIPT, os.X_OK)
    assert services["triton"]["entrypoint"] == ["/opt/dfserve/start-triton.sh"]
    repo = tmp_path / "models"
    repo.mkdir()
    (repo / "build_report.json").write_text("{}")
    command = [a.replace("=/models", f"={repo}") for a in services["triton"]["command"]]
    key = "an-admin-key-0123456789-abcdef"

    result = _run_start_script(tmp_path, command, admin_key=key)
    assert result.returncode == 0, result.stderr
    argv = result.stdout.splitlines()
    assert argv == [
        "serve", "--host", "0.0.0.0", "--start-timeout", "600", "--preprocess-instances", "auto", "--", *command
    ]  # fmt: skip
    assert key not in result.stdout + result.stderr
    assert "0 TensorRT plan(s)" in result.stderr
    args = build_parser().parse_args(argv)
    assert args.command == "serve" and args.host == "0.0.0.0" and args.tritonserver_args == command
    settings, rest = split_tritonserver_args(args.tritonserver_args)
    assert settings == {"repository": str(repo), "http_port": "8000", "grpc_port": "8001", "metrics_port": "8002"}
    assert rest == ["--metrics-config=summary_latencies=true"]  # p99s for the alerts and the dashboard
    from dfserve.triton import sizing

    assert args.preprocess_instances == sizing.preprocess_instances()  # sized for this container's CPUs


def test_the_launcher_refuses_arguments_that_would_undo_a_safeguard() -> None:
    from dfserve.cli import build_parser
    from dfserve.errors import ServerError
    from dfserve.triton.args import split_tritonserver_args
    from dfserve.triton.cli import _apply_tritonserver_args

    with pytest.raises(ServerError, match="the repository is --repository DIR; tritonserver's own arguments go after"):
        _apply_tritonserver_args(build_parser().parse_args(["serve", "model_repository"]))
    args = build_parser().parse_args(["serve", "--", "--model-repository", "/m", "--grpc-port=9", "--log-info=true"])
    assert _apply_tritonserver_args(args) == ["--log-info=true"]
    assert (str(args.repository), args.grpc_port) == ("/m", 9)

    assert split_tritonserver_args(["--model-repository", "/m", "--log-info=true"]) == (
        {"repository": "/m"},
        ["--log-info=true"],
    )
    for bad, reason in [
        (f"--http-restricted-api=model-repository:{ADMIN_KEY_HEADER}=k", "DFSERVE_ADMIN_KEY"),
        ("--model-control-mode=explicit", "--model-control-mode=none"),
        ("--grpc-address=0.0.0.0", "--host"),
    ]:
        with pytest.raises(ServerError, match=reason):
            split_tritonserver_args([bad])


def test_triton_start_waits_for_a_finished_build(tmp_path: Path) -> None:
    """An empty volume, or a stale report beside the in-progress marker of a build rewriting the repository, is
    never served: the start script waits, then stops with one line."""
    repo = tmp_path / "models"
    repo.mkdir()
    args = [f"--model-repository={repo}"]
    empty = _run_start_script(tmp_path, args, admin_key="k", wait="1")
    assert empty.returncode == 1 and empty.stdout == ""
    assert "holds no finished dfserve build after 1 s" in empty.stderr
    (repo / "build_report.json").write_text("{}")
    (repo / BUILD_MARKER_FILENAME).write_text("123")
    rewriting = _run_start_script(tmp_path, args, admin_key="k", wait="1")
    assert rewriting.returncode == 1 and rewriting.stdout == ""
    (repo / BUILD_MARKER_FILENAME).unlink()
    done = _run_start_script(tmp_path, args, admin_key="k", wait="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == args[0]


def test_triton_start_keeps_nvidias_entrypoint() -> None:
    text = START_SCRIPT.read_text()
    assert "/opt/nvidia/nvidia_entrypoint.sh" in text and "exec $entry dfserve serve" in text


def test_verify_service_checks_the_running_triton(services: dict[str, Any], tmp_path: Path) -> None:
    verify, build = services["verify"], services["build"]
    assert verify["profiles"] == ["verify"]
    assert verify["image"] == build["image"]  # the build image has torch and Transformers
    # through the proxy, like any client (issue 29): its body limit and rate limits apply to verify too
    assert verify["depends_on"] == {
        "triton": {"condition": "service_healthy"},
        "proxy": {"condition": "service_started"},
    }
    script = verify["command"][-1]
    assert f"dfserve verify --url {PROXY_URL}" in script
    from dfserve.cli import build_parser

    argv = shlex.split(script.replace("$$", "$").replace('"$DFSERVE_MODEL"', "ckpt"))
    argv = [a for a in argv if "$" not in a]  # the optional revision flag
    assert argv[:2] == ["exec", "dfserve"]
    args = build_parser().parse_args(argv[2:])
    assert args.command == "verify" and args.url == PROXY_URL and args.model == "ckpt"


def test_triton_start_refuses_a_plan_this_host_cannot_load(services: dict[str, Any], tmp_path: Path) -> None:
    plan = tmp_path / "models" / "vit" / "1" / "model.plan"
    write_plan_with_record(plan)
    (tmp_path / "models" / "build_report.json").write_text("{}")
    result = _run_start_script(tmp_path, [f"--model-repository={tmp_path / 'models'}"], admin_key="k")
    assert result.returncode == 1
    assert result.stdout == ""  # tritonserver never started
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: engine {plan} was built for TensorRT 10.5.0 on NVIDIA H100 80GB HBM3 (sm_90) but this host has "
        "no TensorRT: serve it with NVIDIA's Triton container of the same release, or build with "
        "`--target container` (ONNX)"
    )


# ---------------------------------------------------------------------------------------------------------------
# Load test and monitoring profiles


def test_locust_master_and_scalable_workers_run_dfserves_locustfile(
    services: dict[str, Any], env: dict[str, str]
) -> None:
    master, worker = services["locust-master"], services["locust-worker"]
    assert master["profiles"] == worker["profiles"] == ["loadtest"]
    for service in (master, worker):
        command = service["command"]
        assert command[:3] == ["locust", "-f", "/app/loadtest/locustfile.py"]
    assert (REPO / "loadtest" / "locustfile.py").is_file()
    loadtest_dockerfile = (REPO / master["build"]["dockerfile"]).read_text()
    assert "COPY . /app" in loadtest_dockerfile and '"/app[loadtest]"' in loadtest_dockerfile
    assert "--master" in master["command"] and master["command"][-1] == PROXY_URL
    assert worker["command"][-2:] == ["--master-host", "locust-master"] and "--worker" in worker["command"]
    assert worker["deploy"]["replicas"] == env["LOCUST_WORKERS"]
    assert master["depends_on"] == {
        "triton": {"condition": "service_healthy"},
        "proxy": {"condition": "service_started"},
    }
    assert worker["image"] == master["image"]


def test_monitoring_services_mount_files_that_exist(services: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
                assert volume.endswith(":ro"), f"{name} should mount {source} read-only"
    core = [name for name, service in services.items() if "profiles" not in service]
    assert sorted(core) == ["proxy", "triton"]  # `docker compose up` starts the serving path only, never the build

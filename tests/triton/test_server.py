"""dfserve.triton.process and `dfserve serve` against a real tritonserver (nvidia-pytriton's 2.51 binary).

The repositories are tiny Python-backend models written here, so these tests do not depend on the build.
Their model.py imports numpy and dfserve.spec.model through DFSERVE_PYTHONPATH, which is the hand-over that the
generated shims rely on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import IO

import numpy as np
import pytest

from dfserve.errors import PortTakenError, ServerError, ServerStartError, TritonNotFoundError
from dfserve.repository.overlay import overlay_repository
from dfserve.spec.model import Labels, ModelNames, ModelSpec, Preprocessing
from dfserve.spec.names import (
    ADMIN_KEY_HEADER,
    BUILD_MARKER_FILENAME,
    GRPC_RESTRICTED_HEADER_PREFIX,
    PYTHONPATH_ENV,
    TRITONSERVER_ENV,
)
from dfserve.triton.distribution import find_tritonserver
from dfserve.triton.logs import explain_log
from dfserve.triton.process import TritonServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ADD_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
dynamic_batching {{ max_queue_delay_microseconds: 100 }}
"""

ADD_MODEL = f"""
import os
import sys
import threading

sys.path[:0] = os.environ["{PYTHONPATH_ENV}"].split(os.pathsep)

import numpy as np
import triton_python_backend_utils as pb_utils

import dfserve.spec.model  # noqa: F401  (proves the launcher's import path reaches model code)

ADD = {{add}}


class TritonPythonModel:
    def initialize(self, args):
        {{initialize}}

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = pb_utils.Tensor("y", (x + ADD).astype(np.float32))
            responses.append(pb_utils.InferenceResponse([y]))
        return responses
"""

BROKEN_REASON = "checkpoint weights are corrupt: boom-4711"


def write_model(repo: Path, name: str, add: float = 1.0, initialize: str = "pass") -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(ADD_CONFIG.format(name=name))
    (repo / name / "1" / "model.py").write_text(ADD_MODEL.format(add=add, initialize=initialize))


def spec_for(engine: str, preprocess: str) -> ModelSpec:
    return ModelSpec(
        source="test",
        labels=Labels(names=("real", "fake"), activation="sigmoid", num_logits=1),
        preprocessing=Preprocessing(resize="fixed", size=(32, 32)),
        models=ModelNames(engine=engine, preprocess=preprocess, ensemble="unused"),
    )


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


def http(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    data = b"{}" if method == "POST" else None
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def add_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "addone", 1.0)
    return repo


@pytest.fixture(scope="module")
def server(add_repo: Path) -> object:
    srv = TritonServer(add_repo, http_port=0, grpc_port=0, metrics_port=0)
    srv.start(timeout=90)
    yield srv
    srv.stop()


def test_serves_inference_on_free_local_ports(server: TritonServer) -> None:
    import tritonclient.http as httpclient

    for url in (server.http_url, server.grpc_url, server.metrics_url):
        host, port = url.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
    assert len({server.http_port, server.grpc_port, server.metrics_port}) == 3
    assert server.is_running() and server.pid is not None
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_server_ready() and client.is_model_ready("addone")
    x = np.array([[1.0, 2.0], [3.0, -4.0]], dtype=np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("addone", [inp])
    np.testing.assert_array_equal(result.as_numpy("y"), x + 1)


def test_metrics_endpoint_answers(server: TritonServer) -> None:
    status, body = http(f"http://{server.metrics_url}/metrics")
    assert status == 200
    assert 'nv_inference_request_success{model="addone"' in body


def test_restricted_http_api_needs_the_key(server: TritonServer) -> None:
    url = f"http://{server.http_url}/v2/repository/index"
    status, body = http(url, method="POST")
    assert status == 403, body
    assert ADMIN_KEY_HEADER in body
    status, _ = http(url, method="POST", headers={ADMIN_KEY_HEADER: "wrong"})
    assert status == 403
    status, body = http(url, method="POST", headers=server.admin_headers)
    assert status == 200
    assert json.loads(body) == [{"name": "addone", "version": "1", "state": "READY"}]
    assert server.model_index()[0]["name"] == "addone"
    # model control is off: even with the key, nothing can be loaded or unloaded
    status, body = http(f"http://{server.http_url}/v2/repository/models/addone/unload", method="POST",
                        headers=server.admin_headers)  # fmt: skip
    assert status >= 400 and "explicit model load / unload is not allowed" in body, (status, body)
    # shared memory (maps caller memory) and logging (writes files) are behind the key too
    assert http(f"http://{server.http_url}/v2/systemsharedmemory/status")[0] == 403
    # (shared memory is off unless allow_shared_memory: not even the key opens it; test_reliability.py)
    assert http(f"http://{server.http_url}/v2/systemsharedmemory/status", headers=server.admin_headers)[0] == 403
    assert http(f"http://{server.http_url}/v2/logging")[0] == 403
    # the open APIs stay open
    assert http(f"http://{server.http_url}/v2/models/addone/config")[0] == 200
    assert http(f"http://{server.http_url}/v2/models/stats")[0] == 200


def test_restricted_grpc_api_needs_the_key(server: TritonServer) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from dfserve.client import AccessDeniedError
    from dfserve.client._errors import map_error

    client = grpcclient.InferenceServerClient(server.grpc_url)
    for headers in (None, {GRPC_RESTRICTED_HEADER_PREFIX + ADMIN_KEY_HEADER: "wrong-Key-0123456789"}):
        with pytest.raises(InferenceServerException, match="restricted") as info:
            client.get_model_repository_index(headers=headers)
        # Triton 2.51 hard-codes UNAVAILABLE here (grpc_server CommonCallData::Execute); no server option changes
        # it, so dfserve's clients map this answer to a final, non-retried access error instead
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        mapped = map_error(info.value, url=server.grpc_url)
        assert isinstance(mapped, AccessDeniedError) and not mapped.retryable
    key = {GRPC_RESTRICTED_HEADER_PREFIX + ADMIN_KEY_HEADER: server.restricted_api_key}
    index = client.get_model_repository_index(headers=key, as_json=True)
    assert [m["name"] for m in index["models"]] == ["addone"]
    assert client.is_model_ready("addone")


def test_second_start_is_refused(server: TritonServer) -> None:
    with pytest.raises(ServerError, match="already started"):
        server.start()


def test_broken_model_fails_start_with_its_own_reason(tmp_path: Path) -> None:
    write_model(tmp_path, "fine", 1.0)
    write_model(tmp_path, "broken", 1.0, initialize=f"raise RuntimeError({BROKEN_REASON!r})")
    srv = TritonServer(tmp_path, http_port=0, grpc_port=0, metrics_port=0)
    with pytest.raises(ServerStartError) as info:
        srv.start(timeout=90)
    message = str(info.value)
    assert BROKEN_REASON in message
    assert "failed to load 'broken'" in message
    assert "exited with code" in message
    assert len(message) < 5000  # the relevant lines, not the whole log
    assert "CudaDriverHelper" not in message  # start-up noise is filtered out
    assert srv.pid is not None and not alive(srv.pid)
    assert BROKEN_REASON in srv.log_text()  # the full log is still there after the failure


def test_start_deadline_stops_a_slow_server(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", 1.0, initialize="import time; time.sleep(60)")
    srv = TritonServer(tmp_path, http_port=0, grpc_port=0, metrics_port=0)
    with pytest.raises(ServerStartError, match="not ready after 3s") as info:
        srv.start(timeout=3)
    assert "loading: slow:1" in str(info.value)  # no error to show: the log's tail says where it was
    assert srv.pid is not None and wait_gone([srv.pid]) == []
    assert wait_gone(processes_mentioning(str(tmp_path))) == []  # its stub too


def test_repository_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="does not exist"):
        TritonServer(tmp_path / "nope", http_port=0).start()
    with pytest.raises(ServerStartError, match="holds no model"):
        TritonServer(tmp_path, http_port=0).start()
    with pytest.raises(ServerError, match="http_port"):
        TritonServer(tmp_path, http_port=70000)
    with pytest.raises(ServerError, match="admin key"):
        TritonServer(tmp_path, restricted_api_key="a:b=c,d-long-enough-key")


@pytest.mark.parametrize(
    ("key", "reason"),
    [("short-Key-123", "too short"), ("a" * 40, "too little entropy"), ("12121212121212121212", "too little entropy")],
)
def test_weak_admin_keys_are_refused(tmp_path: Path, key: str, reason: str) -> None:
    with pytest.raises(ServerError, match=reason):
        TritonServer(tmp_path, restricted_api_key=key)


def test_cli_refuses_a_key_file_others_can_read(add_repo: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(GIVEN_KEY)
    key_file.chmod(0o644)
    out = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "serve", f"--repository={add_repo}", f"--admin-key-file={key_file}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "chmod 600" in out.stderr and GIVEN_KEY not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_find_tritonserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRITONSERVER_ENV, raising=False)
    found = find_tritonserver(None)
    assert found.name == "tritonserver" and os.access(found, os.X_OK)
    with pytest.raises(TritonNotFoundError, match="--tritonserver"):
        find_tritonserver(tmp_path / "missing")
    monkeypatch.setenv(TRITONSERVER_ENV, str(tmp_path / "also-missing"))
    with pytest.raises(TritonNotFoundError, match=TRITONSERVER_ENV):
        find_tritonserver(None)
    monkeypatch.setenv(TRITONSERVER_ENV, str(found))
    assert find_tritonserver(None) == found


def test_stop_leaves_no_process(add_repo: Path) -> None:
    with TritonServer(add_repo, http_port=0, grpc_port=0, metrics_port=0) as srv:
        pid = srv.pid
        assert pid is not None
        stubs = children(pid)
        assert stubs, "the Python backend runs each instance in a stub process"
        log_path = srv.log_path
        assert log_path is not None and log_path.is_file()
    assert wait_gone([pid, *stubs]) == []
    assert not srv.is_running()
    assert srv.stop() == 0  # idempotent
    assert not log_path.exists()  # the private workspace is removed
    assert "Started HTTPService" in srv.log_text()


def test_explain_log_keeps_errors_and_their_traceback() -> None:
    log = "\n".join(
        [
            "I1124 21:41:24.1 5118 server.cc:1] starting",
            'E1124 21:41:24.6 5118 server.cc:241] "CudaDriverHelper has not been initialized."',
            "| model_config_name                |     |",
            "E1124 21:41:26.2 5118 model_lifecycle.cc:642] \"failed to load 'm' version 1: ValueError: bad\\nAt:\"",
            "  model.py(3): initialize",
            "I1124 21:41:26.3 5118 server.cc:305] Waiting for in-flight requests to complete.",
            "error: creating server: Internal - failed to load all models",
        ]
    )
    text = explain_log(log)
    assert "failed to load 'm' version 1: ValueError: bad" in text
    assert "model.py(3): initialize" in text
    assert text.rstrip().endswith("failed to load all models")
    assert "CudaDriverHelper" not in text and "Waiting" not in text and "starting" not in text


# ---------------------------------------------------------------------------------------- dfserve serve


_CLI_PROCESSES: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_leftover_cli() -> Iterator[None]:
    """A test that fails half-way must not leave its `dfserve serve` (and so its tritonserver) running: killing
    the launcher takes the server down with it (PR_SET_PDEATHSIG)."""
    yield
    while _CLI_PROCESSES:
        proc = _CLI_PROCESSES.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def start_cli(*args: str, cwd: Path | None = None) -> tuple[subprocess.Popen[str], dict[str, str], list[str]]:
    """Run `dfserve serve` and read its output until it says the server is ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dfserve.cli", "serve", "--http-port=0", "--grpc-port=0", "--metrics-port=0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        cwd=cwd,
    )
    _CLI_PROCESSES.append(proc)
    assert proc.stdout is not None
    lines: list[str] = []
    queue: Queue[str | None] = Queue()

    def pump(stream: IO[str]) -> None:  # a thread, so that a silent process cannot block the test
        for line in stream:
            queue.put(line)
        queue.put(None)

    threading.Thread(target=pump, args=(proc.stdout,), daemon=True).start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            line = queue.get(timeout=1.0)
        except Empty:
            continue
        if line is None:
            break
        lines.append(line.rstrip())
        if "Ctrl-C or SIGTERM stops the server" in line:
            out = "\n".join(lines)
            key_file = re.search(r"admin key: generated, in (\S+)", out)
            info = {
                "http": re.search(r"HTTP\s*│\s*http://(\S+)", out).group(1),  # type: ignore[union-attr]
                "grpc": re.search(r"gRPC\s*│\s*grpc://(\S+)", out).group(1),  # type: ignore[union-attr]
                "metrics": re.search(r"metrics\s*│\s*http://(\S+)/metrics", out).group(1),  # type: ignore[union-attr]
                "pid": re.search(r"tritonserver ready \(pid (\d+)\)", out).group(1),  # type: ignore[union-attr]
                "key_file": key_file.group(1) if key_file else "",
            }
            info["key"] = Path(info["key_file"]).read_text().strip() if info["key_file"] else ""
            proc.rest = queue  # type: ignore[attr-defined]
            return proc, info, lines
    proc.terminate()
    proc.wait(30)
    raise AssertionError("dfserve serve did not become ready:\n" + "\n".join(lines))


def rest_of_output(proc: subprocess.Popen[str]) -> str:
    """What `dfserve serve` printed after it was ready, once it has exited."""
    queue: Queue[str | None] = proc.rest  # type: ignore[attr-defined]
    out = []
    while (line := queue.get(timeout=10)) is not None:
        out.append(line)
    return "".join(out)


@pytest.fixture
def spec_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    write_model(repo, "engine", 1.0)
    write_model(repo, "prep", 2.0)
    spec_for(engine="engine", preprocess="prep").save(repo)
    return repo


def test_cli_serve_overrides_and_stops_on_sigterm(spec_repo: Path) -> None:
    original = {p: p.read_text() for p in spec_repo.glob("*/config.pbtxt")}
    proc, info, lines = start_cli(
        f"--repository={spec_repo}", "--engine-instances=2", "--preprocess-instances=3", "--max-queue-delay-us=777"
    )
    pid = int(info["pid"])
    try:
        out = "\n".join(lines)
        assert "engine v1 READY" in out and "prep v1 READY" in out
        assert "override for this run: engine: instance_group count 2" in out
        status, body = http(f"http://{info['http']}/v2/models/engine/config")
        config = json.loads(body)
        assert status == 200 and [g["count"] for g in config["instance_group"]] == [2]
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 777
        config = json.loads(http(f"http://{info['http']}/v2/models/prep/config")[1])
        assert [g["count"] for g in config["instance_group"]] == [3]
        assert len(children(pid)) == 5  # one stub process per instance
        assert http(f"http://{info['metrics']}/metrics")[0] == 200
        assert f"grpc://{info['grpc']}" in out and "no authentication" in out  # banner: scheme, metrics exposure
        assert http(f"http://{info['http']}/v2/repository/index", method="POST")[0] == 403
        assert http(f"http://{info['http']}/v2/repository/index", method="POST",
                    headers={ADMIN_KEY_HEADER: info["key"]})[0] == 200  # fmt: skip
        # the generated key is in a private file, never on stdout nor on any command line (ps)
        key_file = Path(info["key_file"])
        assert key_file.stat().st_mode & 0o777 == 0o600 and len(info["key"]) >= 16
        assert info["key"] not in out
        assert info["key"] not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert "--http-restricted-api=" in Path(f"/proc/{pid}/cmdline").read_text()  # Triton's own check is kept
        overlay = re.search(r"served overlay\s*│\s*(\S+)", out).group(1)  # type: ignore[union-attr]
        assert Path(overlay).is_dir()
        stubs = children(pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    rest = rest_of_output(proc)
    assert code == 0, rest
    assert "SIGTERM: stopping tritonserver" in rest
    assert wait_gone([pid, *stubs]) == []
    assert not Path(overlay).exists()
    assert not key_file.exists() and info["key"] not in rest
    assert {p: p.read_text() for p in spec_repo.glob("*/config.pbtxt")} == original  # repository untouched


def test_build_then_serve_with_no_paths_uses_model_repository(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """`dfserve build --model CKPT && dfserve serve`: no flags, the repository is ./model_repository."""
    built = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "build", "--model", str(tiny_checkpoint), "--max-batch-size", "4"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "model_repository" / "detector" / "config.pbtxt").is_file()
    assert not (tmp_path / "model_repository" / BUILD_MARKER_FILENAME).exists()
    proc, info, lines = start_cli(cwd=tmp_path)
    try:
        assert "detector v1 READY" in "\n".join(lines)
        status, body = http(f"http://{info['http']}/v2/models/detector")
        assert status == 200 and json.loads(body)["name"] == "detector"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


GIVEN_KEY = "given-Key-4711-abcdefgh"


def test_cli_serve_exits_nonzero_when_the_server_dies(add_repo: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(GIVEN_KEY + "\n")
    key_file.chmod(0o600)
    proc, info, lines = start_cli(f"--repository={add_repo}", f"--admin-key-file={key_file}", "--max-restarts=0")
    assert "admin key: as given" in "\n".join(lines) and GIVEN_KEY not in "\n".join(lines)
    assert "shared-memory stays closed without --allow-shared-memory" in "\n".join(lines)
    status, _ = http(f"http://{info['http']}/v2/repository/index", method="POST", headers={ADMIN_KEY_HEADER: GIVEN_KEY})
    assert status == 200
    assert GIVEN_KEY not in Path(f"/proc/{info['pid']}/cmdline").read_text()
    os.kill(int(info["pid"]), signal.SIGKILL)
    code = proc.wait(30)
    rest = rest_of_output(proc)
    assert code == 1
    assert f"tritonserver (pid {info['pid']}) died of SIGKILL" in rest and "giving up: 0 restarts" in rest, rest


def test_server_dies_with_a_killed_launcher(add_repo: Path) -> None:
    proc, info, _ = start_cli(f"--repository={add_repo}")
    pid = int(info["pid"])
    stubs = children(pid)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    workspace = next(a.split("=", 1)[1] for a in cmdline if a.startswith("--backend-directory=")).removesuffix(
        "/backends"
    )
    proc.kill()  # SIGKILL: the launcher cannot clean up; PR_SET_PDEATHSIG must
    proc.wait(10)
    assert wait_gone([pid, *stubs]) == []
    shutil.rmtree(workspace)  # what a killed launcher cannot remove


def test_overlay_rejects_unknown_models_and_bad_values(add_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="no such model"):
        overlay_repository(add_repo, tmp_path / "a", instance_counts={"nope": 2})
    with pytest.raises(ServerError, match="at least 1"):
        overlay_repository(add_repo, tmp_path / "b", instance_counts={"addone": 0})
    changes = overlay_repository(add_repo, tmp_path / "c", max_queue_delay_us=5)
    assert changes == ["addone: max_queue_delay_microseconds 5"]
    served, original = tmp_path / "c" / "addone" / "1" / "model.py", add_repo / "addone" / "1" / "model.py"
    assert not served.is_symlink() and served.stat().st_ino == original.stat().st_ino  # a pinned snapshot
    assert "max_queue_delay_microseconds: 5" in (tmp_path / "c" / "addone" / "config.pbtxt").read_text()


def test_cli_instance_flags_need_a_spec(add_repo: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "serve", f"--repository={add_repo}", "--engine-instances=2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "dfserve.json" in out.stderr and "Traceback" not in out.stderr


def test_serve_refuses_an_engine_built_for_another_host(tmp_path: Path) -> None:
    """A TensorRT plan whose record names another TensorRT/GPU is refused in one line before Triton starts."""
    from tests.engines import write_plan_with_record

    write_plan_with_record(tmp_path / "repo" / "vit" / "1" / "model.plan", trt="10.3.0")
    proc = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "serve", "--repository", str(tmp_path / "repo"), "--http-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "10.3.0" in errors[0] and "TensorRT" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_stop_with_an_idle_keep_alive_client_is_prompt_and_leaves_no_shared_memory(add_repo: Path) -> None:
    """Clients keep HTTP connections open on purpose; Triton then waits on SIGINT. The launcher bounds that wait
    and removes the Python-backend stubs' /dev/shm regions that a killed stub leaves behind."""
    import tritonclient.http as httpclient

    from dfserve.triton.state import stub_shm_regions

    server = TritonServer(add_repo, http_port=0, grpc_port=0, metrics_port=0).start()
    assert server.pid is not None
    regions = stub_shm_regions(server.pid)
    assert regions and all(os.path.exists(f"/dev/shm/{r}") for r in regions)
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_server_ready()  # the connection stays open (keep-alive) while the server stops
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 12
    assert not [r for r in regions if os.path.exists(f"/dev/shm/{r}")]
    client.close()


def test_host_exposure_warns_and_banner_names_the_bind_address(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "serve", "--host", "0.0.0.0", "--repository", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "warning: --host 0.0.0.0 exposes HTTP, gRPC and metrics" in out.stderr
    assert "metrics need no key" in out.stderr and "does not exist" in out.stderr
    srv = TritonServer(tmp_path, host="0.0.0.0", http_port=8000, grpc_port=8001)
    assert srv.bind_address("http") == "0.0.0.0:8000" and srv.http_url == "127.0.0.1:8000"
    assert not srv.is_loopback_only and TritonServer(tmp_path).is_loopback_only


def test_a_taken_port_is_reported_as_taken(add_repo: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortTakenError, match=f"the grpc port {port} on 127.0.0.1 is taken"):
            TritonServer(add_repo, http_port=0, grpc_port=port, metrics_port=0).start()
        out = subprocess.run(
            [sys.executable, "-m", "dfserve.cli", "serve", f"--repository={add_repo}", f"--http-port={port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1 and f"the http port {port} on 127.0.0.1 is taken" in out.stderr
    assert "Cuda" not in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("body", "says"),
    [(b"{not json", "failed to parse the request JSON"), (b'{"inputs": 5}', "Unable to parse 'inputs'")],
)
def test_malformed_json_is_answered_500_by_triton_itself(server: TritonServer, body: bytes, says: str) -> None:
    """Triton 2.51's HTTP frontend classes a JSON parse failure as INTERNAL (500) and no option changes that;
    pinned here so that an upgrade that fixes it (400) is noticed. The answer names the problem and the server
    keeps serving; clients must not retry a 500 (dfserve's SDK does not)."""
    req = urllib.request.Request(f"http://{server.http_url}/v2/models/addone/infer", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 500 and says in info.value.read().decode()
    assert http(f"http://{server.http_url}/v2/health/ready")[0] == 200


def test_serve_refuses_a_tensorrt_repository_on_pytritons_server_in_one_line(tmp_path: Path) -> None:
    """nvidia-pytriton's tritonserver has only the Python backend: a TensorRT repository is refused before anything
    starts (before the plan check too, which on a GPU host with TensorRT would pass), naming the missing backend."""
    from dfserve.repository.writer import write_repository
    from dfserve.spec.model import Labels, ModelSpec, Preprocessing
    from dfserve.triton.distribution import TritonDistribution, required_backends
    from tests.engines import write_plan_with_record

    dist = TritonDistribution.from_binary(find_tritonserver(None))
    assert dist.is_pytriton and dist.backends_dir is not None  # the real install from nvidia-pytriton
    assert [p.name for p in dist.backends_dir.iterdir() if p.is_dir()] == ["python"]

    spec = ModelSpec(
        source="x",
        labels=Labels(names=("real", "fake"), activation="sigmoid", num_logits=1),
        preprocessing=Preprocessing(resize="fixed", size=(32, 32)),
    )
    plan = tmp_path / "built" / "model.plan"
    write_plan_with_record(plan)
    repo = write_repository(spec, tmp_path / "repo", target="tensorrt", plan_path=plan)
    assert required_backends(repo) == {"vit": "tensorrt", "preprocess": "python"}

    proc = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "serve", "--repository", str(repo), "--http-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "model 'vit'" in errors[0] and "tensorrt backend" in errors[0] and "only the Python backend" in errors[0]
    assert "Traceback" not in proc.stderr and "starting tritonserver" not in proc.stdout + proc.stderr

    server = TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0)
    with pytest.raises(ServerStartError, match="needs Triton's tensorrt backend"):
        server.start()
    assert server.pid is None  # nothing was started

"""The container entry point (deploy/triton/start-triton.sh) run for real: the script itself, dfserve's launcher,
and nvidia-pytriton's tritonserver standing in for the container's /opt/tritonserver/bin/tritonserver (the
launcher runs both kinds; Docker does not run here). Only NVIDIA's entrypoint script is absent, as the script
allows."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dfserve.spec.model import ModelSpec
from dfserve.spec.names import ADMIN_KEY_HEADER, TRITONSERVER_ENV
from dfserve.triton.distribution import _bundled_tritonserver, free_port
from tests.deploy.compose import REPO, load_compose

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

START_SCRIPT = REPO / "deploy" / "triton" / "start-triton.sh"
KEY = "entrypoint-test-key-0123456789abcdef"


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=b"{}", headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _descendants(pid: int) -> list[int]:
    kids: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid:
                kids += [int(entry.name), *_descendants(int(entry.name))]
    return kids


def test_entry_point_keeps_the_key_off_every_command_line(built_repo: Path, tmp_path: Path) -> None:
    binary = _bundled_tritonserver()
    assert binary is not None, "nvidia-pytriton's tritonserver is part of the test environment"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in (("python3", ""), ("dfserve", "-m dfserve.cli ")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {target}"$@"\n')
        (bin_dir / name).chmod(0o755)
    ports = {kind: free_port() for kind in ("http", "grpc", "metrics")}
    command = [  # compose's own tritonserver arguments, on free ports and this test's repository
        a.replace("=/models", f"={built_repo}").replace("-port=800", "-port=X800")
        for a in load_compose()["services"]["triton"]["command"]
    ]
    for kind, number in (("http", "0"), ("grpc", "1"), ("metrics", "2")):
        command = [a.replace(f"--{kind}-port=X800{number}", f"--{kind}-port={ports[kind]}") for a in command]
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        TRITONSERVER_ENV: str(binary),
        "DFSERVE_ADMIN_KEY": KEY,
        "DFSERVE_BUILD_WAIT_S": "5",
        "COLUMNS": "200",
    }
    proc = subprocess.Popen(
        [str(START_SCRIPT), *command], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    http = f"http://127.0.0.1:{ports['http']}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"{http}/v2/health/ready", timeout=2) as ready:
                    if ready.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the entry point's server did not become ready"
            time.sleep(0.5)
        family = [proc.pid, *_descendants(proc.pid)]
        servers = [p for p in family if Path(f"/proc/{p}/exe").resolve().name == "tritonserver"]
        assert len(servers) == 1, family
        server_args = Path(f"/proc/{servers[0]}/cmdline").read_bytes().split(b"\0")
        assert f"--grpc-port={ports['grpc']}".encode() in server_args  # compose's arguments reached tritonserver
        assert b"--grpc-address=0.0.0.0" in server_args  # the proxy reaches it from another container
        # HTTP: the launcher's front answers on compose's port (the readiness above); Triton's own is private
        assert b"--http-address=127.0.0.1" in server_args

        holders = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if KEY.encode() in (entry / "cmdline").read_bytes():
                        holders.append(entry.name)
                except OSError:
                    continue
        assert holders == [], f"the admin key is on the command line of {holders}"
        assert KEY.encode() not in Path(f"/proc/{servers[0]}/environ").read_bytes()

        # preprocess sized for the CPUs this process may use (dfserve.triton.sizing), not the build's count
        from dfserve.triton import sizing

        with urllib.request.urlopen(f"{http}/v2/models/preprocess/config", timeout=10) as response:
            (group,) = json.loads(response.read())["instance_group"]
        assert group["count"] == sizing.preprocess_instances()
        if sizing.available_cpus() > 1:  # the built repository says 1 (tests/conftest.py TEST_BATCHING)
            assert group["count"] != ModelSpec.load(built_repo).batching.preprocess_instances
        assert _status(f"{http}/v2/repository/index") == 403
        assert _status(f"{http}/v2/repository/index", {ADMIN_KEY_HEADER: "not-the-key-0123456789"}) == 403
        assert _status(f"{http}/v2/repository/index", {ADMIN_KEY_HEADER: KEY}) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert KEY not in out
    assert all(not Path(f"/proc/{p}").exists() for p in servers)

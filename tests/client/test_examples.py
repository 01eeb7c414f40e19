"""The programs in client/ run as a user runs them, against the real server, and pass mypy --strict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dfserve.spec.names import ADMIN_KEY_ENV

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "client"

pytestmark = pytest.mark.slow


def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def test_every_example_is_listed_and_tested() -> None:
    programs = {p.name for p in EXAMPLES.glob("*.py")}
    readme = (EXAMPLES / "README.md").read_text()
    tested = (Path(__file__).read_text()).count
    assert programs == {
        "sync_http.py",
        "async_grpc_service.py",
        "shared_memory.py",
        "bad_file_batch.py",
        "caller_unit_test.py",
    }
    for name in programs:
        assert f"`{name}`" in readme
        assert tested(f'"{name}"') >= 1


def test_sync_http(triton_server: Any, sample_images: dict[str, Path]) -> None:
    paths = [str(p) for p in sample_images.values()]
    result = run_example("sync_http.py", "--url", f"http://{triton_server.http_url}", *paths)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "labels ['real', 'fake']" in lines[0]
    assert len(lines) == 1 + len(paths)
    assert all("(real=" in line and ", fake=" in line for line in lines[1:])


def test_async_grpc_service(triton_server: Any, sample_images: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    paths = [str(p) for p in sample_images.values()] * 3 + [str(bad)]
    result = run_example("async_grpc_service.py", "--url", f"grpc://{triton_server.grpc_url}", "--workers", "4", *paths)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(paths)
    assert sum("rejected" in line for line in lines) == 1
    assert any(line.startswith("bad.jpg: rejected") for line in lines)


def test_shared_memory(triton_server: Any, sample_images: dict[str, Path]) -> None:
    path = str(next(iter(sample_images.values())))
    refused = run_example("shared_memory.py", "--url", triton_server.http_url, path, env={ADMIN_KEY_ENV: ""})
    assert refused.returncode == 2 and ADMIN_KEY_ENV in refused.stderr
    key = {ADMIN_KEY_ENV: triton_server.restricted_api_key}
    result = run_example("shared_memory.py", "--url", triton_server.http_url, path, env=key)
    assert result.returncode == 0, result.stderr
    assert "regions used: 1" in result.stdout


def test_bad_file_batch(triton_server: Any, sample_images: dict[str, Path], tmp_path: Path) -> None:
    for name, path in sample_images.items():
        (tmp_path / path.name).write_bytes(path.read_bytes())
        del name
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(next(iter(sample_images.values())).read_bytes()[:300])
    result = run_example("bad_file_batch.py", "--url", triton_server.http_url, str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{len(sample_images)} classified, 2 refused" in result.stdout
    assert "empty.jpg: ERROR InvalidInputError" in result.stdout


def test_caller_unit_test() -> None:
    """The example of a caller's tests passes as a caller runs it (pytest, no server)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "caller_unit_test.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=EXAMPLES,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout, result.stdout


def test_examples_are_in_the_docs_and_the_sdist() -> None:
    """The README (the package's long description) names every example, and the sdist ships the folder."""
    import tomllib

    readme = (REPO / "README.md").read_text()
    for program in EXAMPLES.glob("*.py"):
        assert f"`{program.name}`" in readme, program.name
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "client" in pyproject["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]


def test_examples_pass_mypy_strict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(EXAMPLES)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_checker_sees_the_sdks_types(tmp_path: Path) -> None:
    """py.typed and Literal parameters: mypy --strict flags a misspelt mode and protocol in a caller's code, and
    knows `positive_score` is optional and `classify_iter` yields (index, result) pairs."""
    caller = tmp_path / "caller.py"
    caller.write_text(
        "import dfserve\n"
        "client = dfserve.Client('localhost:8000', 'grcp', mode='pixel')\n"
        "p = client.classify('x.jpg')\n"
        "reveal_type(p.positive_score)\n"
        "for index, result in client.classify_iter(['x.jpg']):\n"
        "    reveal_type(result)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(caller)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    out = result.stdout
    assert result.returncode == 1, out
    assert 'Argument 2 to "Client" has incompatible type "Literal[\'grcp\']"' in out, out
    assert 'Argument "mode" to "Client" has incompatible type "Literal[\'pixel\']"' in out, out
    assert 'Revealed type is "float | None"' in out or 'Revealed type is "builtins.float | None"' in out, out
    assert "Prediction | dfserve.client._exceptions.DfserveClientError" in out, out
